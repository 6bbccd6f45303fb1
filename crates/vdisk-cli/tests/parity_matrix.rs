//! Common commands, as course notes and scripts write them, run through both tools on copies of
//! the same images: the same exit code, the same standard output (vdisk's own "vdisk details"
//! aside, run times aside) and the same first error line (without the program's name). Each line
//! of `COMMANDS` is one command; where vdisk differs on purpose, the command is not listed here
//! but in the README's list of deliberate differences.

mod common;
use common::*;
use std::path::{Path, PathBuf};
use vdisk_testutil::{qemu_available, Scratch};

const COMMANDS: &str = "
info top.qcow2
info --output=json --backing-chain top.qcow2
info --output=json st.qcow2
info st.qcow2
info -f raw top.qcow2
info t.vmdk
info --output=json t.vdi
info --output=json s.vmdk
info c.qcow2
info t.vhdx
info --output=json t.vhdx
map --output=json t.vhdx
map t.vhdx
check t.vhdx
check --output=json t.vhdx
compare t.vhdx top.raw
convert -O raw t.vhdx o.raw
convert -O qcow2 t.vhdx o.qcow2
create -f vhdx n.vhdx 10M
create -f vhdx -o subformat=fixed,block_size=1M,log_size=1.5M n.vhdx 10M
create -f vhdx -o block_size=3M n.vhdx 10M
create -f vhdx -o block_state_zero=off,subformat=bogus n.vhdx 10M
convert -O vhdx top.qcow2 o.vhdx
convert -O vhdx -o block_state_zero=off,block_size=1M t.vdi o.vhdx
convert -c -O vhdx top.qcow2 o.vhdx
measure -O vhdx --size 1G
map top.qcow2
map --output=json top.raw
map -s 1M -l 2M top.qcow2
map --start-offset=5M top.qcow2
map --output=json t.vmdk
map t.vdi
map --output=json t.vhd
map --output=json c.qcow2
check --output=json top.qcow2
check -q top.qcow2
check -r bogus top.qcow2
info --output=xml top.qcow2
map --output=yaml top.qcow2
check --output= top.qcow2
measure --output=xml -O qcow2 top.qcow2
check t.vmdk
check --output=json t.vdi
check c.qcow2
check --output=json c.qcow2
check -r all t.vhdx
check -r leaks --output=json t.vhdx
compare top.qcow2 top.raw
compare -s top.qcow2 top.raw
compare -q top.qcow2 base.qcow2
compare t.vmdk t.vdi
compare -f vmdk -F vpc t.vmdk t.vhd
compare -s t.vmdk top.raw
measure -O qcow2 top.qcow2
measure --size 1G -O qcow2
measure --size 1G
measure -O qcow2 -o cluster_size=4k --size 10G
measure --output=json -O qcow2 top.qcow2
measure -O qcow2 -l snap1 base.qcow2
measure -O vmdk top.qcow2
measure -O vdi --size 1G
measure -O raw t.vmdk
measure -O qcow2 -o compression_type=zstd --size 1G
measure -O qcow2 c.qcow2
snapshot -l base.qcow2
snapshot -l top.qcow2
snapshot -a nope base.qcow2
snapshot -d nope base.qcow2
snapshot -c snap1 base.qcow2
resize top.qcow2 8M
resize top.qcow2 -1M
resize --shrink top.qcow2 2M
resize top.qcow2 abc
resize top.raw +1M
resize t.vdi 1M
amend -o lazy_refcounts=on top.qcow2
amend -o compat=0.10 base.qcow2
amend -o cluster_size=4k top.qcow2
amend -o foo=bar top.qcow2
amend -o compat=0.10 c.qcow2
amend -o refcount_bits=8 top.qcow2
amend -o refcount_bits=1 c.qcow2
amend -o refcount_bits=3 top.qcow2
amend -o refcount_bits=x top.qcow2
amend -o size=8M top.qcow2
amend -o size=1000 top.qcow2
amend -o size=16E top.qcow2
amend -o compat=0.10,size=8M base.qcow2
resize top.qcow2 7E
commit top.qcow2
commit -d top.qcow2
commit -b base.qcow2 top.qcow2
rebase -u -b base.qcow2 -F qcow2 top.qcow2
convert -O qcow2 top.qcow2 o.qcow2
convert -O qcow2 -c top.qcow2 o.qcow2
convert -O vdi top.qcow2 o.vdi
convert -O vpc top.qcow2 o.vhd
convert -O vmdk -o subformat=streamOptimized top.qcow2 o.vmdk
convert -O raw -S 64k top.qcow2 o.raw
convert -O raw -m 17 top.qcow2 o.raw
convert -O raw -W top.qcow2 o.raw
convert -l snap1 -O raw base.qcow2 o.raw
convert -l nope -O raw base.qcow2 o.raw
convert -O qcow2 -B base.qcow2 -F qcow2 top.qcow2 o.qcow2
convert -O qcow2 -o help
convert -O bogus top.qcow2 o.x
convert -f raw -O qcow2 top.qcow2 o.qcow2
convert --target-is-zero -O raw top.qcow2 o.raw
convert -n -O raw top.qcow2 top.raw
convert -O qcow2 t.vmdk o.qcow2
convert -O vmdk -o subformat=monolithicFlat t.vdi o.vmdk
convert -O vmdk -o subformat=twoGbMaxExtentFlat t.vdi o.vmdk
convert -O vmdk -o subformat=bogus t.vdi o.vmdk
convert -O vdi -c t.vdi o.vdi
convert -O vdi -o static=on t.vmdk o.vdi
convert -O vpc -o subformat=fixed t.vmdk o.vhd
convert -O raw s.vmdk o.raw
convert -C -O raw t.vmdk o.raw
convert -C -c -O qcow2 t.vmdk o.qcow2
convert -O qcow2 -o cluster_size=1k t.vdi o.qcow2
convert -O qcow2 -o cluster_size=3k t.vdi o.qcow2
convert top.qcow2 -O qcow2 o.qcow2
create -f qcow2 n.qcow2 1G
create -f qcow2 -o cluster_size=2M,preallocation=metadata n.qcow2 1G
create -f vmdk -o subformat=twoGbMaxExtentSparse n.vmdk 5G
create -f raw n.raw 16E
create -f qcow2 n.qcow2 1P
create -q -f qcow2 n.qcow2 1G
create -f vdi -o static=on n.vdi 10M
create -f vmdk -o hwversion=6 n.vmdk 10M
create -f vmdk -o adapter_type=bogus n.vmdk 10M
create -f vmdk -o adapter_type=lsilogic n.vmdk 10M
create -f vpc n.vhd 10M
create -f vpc -o subformat=fixed,force_size=on n.vhd 10M
create -f qcow2 -b base.qcow2 n.qcow2
dd if=top.qcow2 of=d.raw bs=1M count=2
dd -O qcow2 if=top.qcow2 of=d.qcow2 skip=1 bs=1M
dd if=t.vmdk of=d.raw bs=64k count=4
dd -f vmdk -O vdi if=t.vmdk of=d.vdi bs=1M
bench -c 100 t.vmdk
bench -c 100 -w t.vdi
info
info top.qcow2 base.qcow2
check
compare top.qcow2
map
snapshot -l
commit
resize top.qcow2
amend top.qcow2
amend -o help top.qcow2
amend -f qcow2 -o help
amend -f vdi -o help
amend -o compat=1.1
create
create -f qcow2 n.qcow2 1G extra
create -f qcow2 -o size=1M n.qcow2
create -f qcow2 -o size=1M n.qcow2 2M
create -f raw -o size=abc n.raw
bench
measure
create -f raw -o preallocation=metadata n.raw 1M
create -f raw -o preallocation=bogus n.raw 1M
convert -O raw -o preallocation=metadata top.raw n.raw
convert -O raw -o preallocation=bogus top.raw n.raw
create -f qcow2 /nonexistent-dir/n.qcow2 1M
convert -O raw top.raw /nonexistent-dir/n.raw
";

/// The images every command starts from, made once by qemu-img and copied for each run.
fn template(d: &Path) {
    qemu_ok(d, &["create", "-q", "-f", "qcow2", "base.qcow2", "4M"]);
    qemu_io(d, "qcow2", "base.qcow2", &["write -P 1 0 1M"]);
    qemu_overlay(d, "base.qcow2", "qcow2", "top.qcow2", None);
    qemu_io(d, "qcow2", "top.qcow2", &["write -P 2 2M 64k"]);
    qemu_ok(d, &["convert", "-O", "raw", "top.qcow2", "top.raw"]);
    qemu_ok(d, &["snapshot", "-c", "snap1", "base.qcow2"]);
    // An overlay with a snapshot of its own: JSON keys that share a QDict bucket.
    qemu_overlay(d, "base.qcow2", "qcow2", "st.qcow2", None);
    qemu_ok(d, &["snapshot", "-c", "s1", "st.qcow2"]);
    for (args, out) in [
        (&["-O", "vmdk"][..], "t.vmdk"),
        (&["-O", "vdi"], "t.vdi"),
        (&["-O", "vpc"], "t.vhd"),
        (&["-O", "vmdk", "-o", "subformat=streamOptimized"], "s.vmdk"),
        (&["-O", "qcow2", "-c"], "c.qcow2"),
        (&["-O", "vhdx"], "t.vhdx"),
    ] {
        qemu_ok(d, &[&["convert"][..], args, &["top.qcow2", out]].concat());
    }
}

fn copy_of(template: &Path, to: PathBuf) -> PathBuf {
    std::fs::create_dir_all(&to).unwrap();
    for e in std::fs::read_dir(template).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
    to
}

#[test]
fn common_commands_behave_as_in_qemu_img() {
    if !qemu_available() {
        return;
    }
    let s = Scratch::new("parity-matrix");
    let t = s.path().join("template");
    std::fs::create_dir_all(&t).unwrap();
    template(&t);
    let mut differ = Vec::new();
    for (i, line) in COMMANDS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .enumerate()
    {
        let args: Vec<&str> = line.split_whitespace().collect();
        let dv = copy_of(&t, s.path().join(format!("v{i}")));
        let dq = copy_of(&t, s.path().join(format!("q{i}")));
        let (v, q) = (vdisk(&dv, &args), qemu(&dq, &args));
        let timeless = |o: &str| -> String {
            o.lines()
                .map(|l| match l.strip_prefix("Run completed in ") {
                    Some(_) => "Run completed in T seconds.",
                    None => l,
                })
                .collect::<Vec<_>>()
                .join("\n")
        };
        let (vo, qo) = (timeless(&qemu_view(&out(&v))), timeless(&out(&q)));
        let qo = if qo.trim_start().starts_with(['{', '[']) {
            json(&qo).to_string()
        } else {
            qo
        };
        if v.status.code() != q.status.code()
            || vo != qo
            || first_message(&err(&v)) != first_message(&err(&q))
        {
            differ.push(format!(
                "{line}\n  exit {:?} / {:?}\n  vdisk: {}\n  qemu-img: {}",
                v.status.code(),
                q.status.code(),
                first_message(&err(&v)),
                first_message(&err(&q))
            ));
        }
        std::fs::remove_dir_all(&dv).unwrap();
        std::fs::remove_dir_all(&dq).unwrap();
    }
    assert!(differ.is_empty(), "{}", differ.join("\n"));
}
