//! External data files (`data_file`, `data_file_raw`), checked against qemu.

mod common;
use common::*;
use vdisk_qcow2::OpenOptions;
use vdisk_testutil::*;

#[test]
fn external_data_file() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("qcow2-df");
    // A relative data file name is opened from the working directory, by QEMU and by vdisk alike
    // (and both create it there). This binary holds only this test, so changing the working
    // directory affects nothing else.
    std::env::set_current_dir(s.path()).unwrap();
    for (name, opts) in [
        ("df", "data_file=df.raw"),
        ("dfr", "data_file=dfr.raw,data_file_raw=on"),
        ("dfm", "data_file=dfm.raw,preallocation=metadata"),
        ("dfe", "data_file=dfe.raw,extended_l2=on"),
    ] {
        // Relative data file names are stored and opened as given.
        let img = format!("{name}.qcow2");
        qemu_img(&["create", "-q", "-f", "qcow2", "-o", opts, &img, "3M"]);
        let p = s.join(&img);
        qemu_io("qcow2", &p, PATTERN);
        verify(&p);
        let r = open_path(&p, &OpenOptions::default()).unwrap();
        let e = vdisk_core::reader::collect_extents(&r).unwrap();
        let host = e.iter().find_map(|x| x.host.clone()).unwrap();
        assert_eq!(&*host.file, std::path::Path::new(&format!("{name}.raw")));
    }
}
