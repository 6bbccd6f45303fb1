//! Hostile packages: bad checksums in every header, sizes far past the file, absurd member counts,
//! huge pax headers and records, a 1 GiB descriptor and manifest, XML bombs and deep nesting. Each
//! must be a clear error (or, for the manifest, a reported problem), quick, and within bounded
//! memory. One test in its own binary, so that the process's peak memory (VmHWM) measures it alone.

mod common;

use common::samples::{disk, vmware_ovf, VMDK_STREAM};
use common::tarbuild::*;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};
use vdisk_core::{Error, FileStorage, MemStorage, Result, Storage};
use vdisk_ova::Package;
use vdisk_testutil::Scratch;

/// Peak resident memory of this process, in KiB (`VmHWM` in /proc/self/status).
fn peak_kib() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM")
}

fn open_mem(bytes: Vec<u8>) -> Result<Package> {
    Package::open(MemStorage::new("/h/hostile.ova", bytes).shared())
}

/// A store that is one block repeated to `len` bytes, without holding them.
struct Repeat {
    block: [u8; 512],
    len: u64,
}

impl Storage for Repeat {
    fn path(&self) -> &Path {
        Path::new("/h/repeat.ova")
    }
    fn len(&self) -> Result<u64> {
        Ok(self.len)
    }
    fn read_at(&self, buf: &mut [u8], offset: u64) -> Result<usize> {
        let n = buf.len().min(self.len.saturating_sub(offset) as usize);
        let mut done = 0;
        while done < n {
            let at = ((offset + done as u64) % 512) as usize;
            let k = (512 - at).min(n - done);
            buf[done..done + k].copy_from_slice(&self.block[at..at + k]);
            done += k;
        }
        Ok(n)
    }
}

fn good_package() -> Vec<u8> {
    let ovf = vmware_ovf(&[disk(1, "disk1.vmdk", 1, VMDK_STREAM, Some(3000))]);
    let mut t = Vec::new();
    push_file(&mut t, "a.ovf", ovf.as_bytes());
    push_file(&mut t, "a.mf", b"");
    push_file(&mut t, "disk1.vmdk", &[0x5a; 3000]);
    push_end(&mut t);
    t
}

/// A package whose descriptor is `doc`.
fn with_descriptor(doc: &[u8]) -> Vec<u8> {
    let mut t = Vec::new();
    push_file(&mut t, "a.ovf", doc);
    push_end(&mut t);
    t
}

/// A file in `dir` holding `header` and then `size` bytes of (sparse) zeros.
fn sparse_file(dir: &Scratch, name: &str, headers: &[u8], size: u64) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, headers).unwrap();
    let f = std::fs::OpenOptions::new().write(true).open(&p).unwrap();
    f.set_len(headers.len() as u64 + size.div_ceil(512) * 512 + 1024)
        .unwrap();
    p
}

fn expect_err(what: &str, r: Result<Package>, want: &[&str]) -> Error {
    let e = match r {
        Ok(_) => panic!("{what}: opened"),
        Err(e) => e,
    };
    let s = e.to_string();
    assert!(
        want.iter().any(|w| s.contains(w)),
        "{what}: '{s}' says none of {want:?}"
    );
    e
}

#[test]
fn hostile_packages_fail_fast_in_bounded_memory() {
    let base_peak = peak_kib();
    let mut cases: Vec<(&str, Duration)> = Vec::new();
    let mut timed = |what: &'static str, f: &mut dyn FnMut()| {
        let t = Instant::now();
        f();
        cases.push((what, t.elapsed()));
    };
    let dir = Scratch::new("ova-hostile");

    timed("bad checksum in every header", &mut || {
        let good = good_package();
        let index = vdisk_ova::tar::index(&MemStorage::new("g", good.clone())).unwrap();
        for m in &index.members {
            let mut bad = good.clone();
            bad[m.header_offset as usize + 10] ^= 0x20;
            let e = expect_err("bad checksum", open_mem(bad), &["checksum"]);
            assert!(
                e.to_string().contains(&format!("{:#x}", m.header_offset)),
                "{e}"
            );
        }
    });

    timed("member size far past the end", &mut || {
        let mut t = good_package();
        let index = vdisk_ova::tar::index(&MemStorage::new("g", t.clone())).unwrap();
        let at = index.members[2].header_offset as usize;
        let mut h = [0u8; 512];
        h.copy_from_slice(&t[at..at + 512]);
        set_size(&mut h, 1 << 60);
        set_checksum(&mut h);
        t[at..at + 512].copy_from_slice(&h);
        expect_err("huge size", open_mem(t), &["run past the end"]);
    });

    timed("a terabyte of empty members", &mut || {
        let r = Repeat {
            block: header(b"a.ovf", 0, b'0', Magic::Ustar),
            len: 1 << 40,
        };
        let e = expect_err(
            "members",
            Package::open(Arc::new(r)),
            &["number of tar members"],
        );
        assert!(matches!(e, Error::Limit { .. }));
    });

    timed("a pax header claiming 2^60 bytes", &mut || {
        let mut t = Vec::new();
        t.extend_from_slice(&header(b"./PaxHeaders/a.ovf", 1 << 60, b'x', Magic::Ustar));
        t.extend_from_slice(&[0u8; 4096]);
        let e = expect_err("pax 2^60", open_mem(t), &["extension header"]);
        assert!(matches!(e, Error::Limit { .. }));
    });

    timed("a pax record claiming 100 MiB", &mut || {
        let mut t = Vec::new();
        push_member(
            &mut t,
            "./PaxHeaders/a.ovf",
            b"104857600 path=a.ovf\n",
            b'x',
            Magic::Ustar,
        );
        push_file(&mut t, "a.ovf", b"<x/>");
        expect_err("pax record", open_mem(t), &["runs past"]);
    });

    timed("a GNU long name claiming 2^60 bytes", &mut || {
        let mut t = Vec::new();
        t.extend_from_slice(&header(b"././@LongLink", 1 << 60, b'L', Magic::Gnu));
        expect_err("long name", open_mem(t), &["extension header"]);
    });

    timed("a 1 GiB descriptor", &mut || {
        let h = header(b"big.ovf", 1 << 30, b'0', Magic::Ustar);
        let p = sparse_file(&dir, "bigdesc.ova", &h, 1 << 30);
        let s = Arc::new(FileStorage::open(&p).unwrap());
        let e = expect_err(
            "1 GiB descriptor",
            Package::open(s),
            &["size of the OVF descriptor"],
        );
        assert!(matches!(e, Error::Limit { .. }));
    });

    timed("a 1 GiB manifest", &mut || {
        let ovf = vmware_ovf(&[]);
        let mut t = Vec::new();
        push_file(&mut t, "a.ovf", ovf.as_bytes());
        t.extend_from_slice(&header(b"a.mf", 1 << 30, b'0', Magic::Ustar));
        let p = sparse_file(&dir, "bigmf.ova", &t, 1 << 30);
        let pkg = Package::open(Arc::new(FileStorage::open(&p).unwrap())).unwrap();
        let m = pkg.manifest().unwrap().manifest.as_ref().unwrap_err();
        assert!(m.contains("size of the manifest"), "{m}");
    });

    timed("a billion laughs", &mut || {
        let mut doc =
            String::from("<?xml version=\"1.0\"?>\n<!DOCTYPE lolz [\n <!ENTITY lol \"lol\">\n");
        for i in 1..10 {
            let prev = if i == 1 {
                "lol".to_string()
            } else {
                format!("lol{}", i - 1)
            };
            doc.push_str(&format!(
                " <!ENTITY lol{i} \"{}\">\n",
                format!("&{prev};").repeat(10)
            ));
        }
        doc.push_str("]>\n<Envelope xmlns=\"http://schemas.dmtf.org/ovf/envelope/1\"><Info>&lol9;</Info></Envelope>");
        expect_err("bomb", open_mem(with_descriptor(doc.as_bytes())), &["DTD"]);
    });

    timed("a million nested elements", &mut || {
        let doc = format!(
            "<Envelope xmlns='http://schemas.dmtf.org/ovf/envelope/1'>{}{}</Envelope>",
            "<a>".repeat(1 << 20),
            "</a>".repeat(1 << 20)
        );
        expect_err(
            "deep",
            open_mem(with_descriptor(doc.as_bytes())),
            &["nesting depth"],
        );
    });

    timed("an element with 500 000 attributes", &mut || {
        let attrs: String = (0..500_000).map(|i| format!(" a{i}=''")).collect();
        let doc = format!("<Envelope xmlns='http://schemas.dmtf.org/ovf/envelope/1'{attrs}/>");
        expect_err(
            "attributes",
            open_mem(with_descriptor(doc.as_bytes())),
            &["attributes"],
        );
    });

    timed("an 8 MiB descriptor of empty elements", &mut || {
        let n = (vdisk_ova::limits::MAX_DESCRIPTOR_BYTES as usize - 200) / 4;
        let doc = format!(
            "<Envelope xmlns='http://schemas.dmtf.org/ovf/envelope/1'>{}</Envelope>",
            "<a/>".repeat(n)
        );
        expect_err(
            "nodes",
            open_mem(with_descriptor(doc.as_bytes())),
            &["XML nodes"],
        );
    });

    timed("40 000 disks naming 40 000 files", &mut || {
        let mut doc = String::from("<Envelope xmlns='http://schemas.dmtf.org/ovf/envelope/1' xmlns:ovf='http://schemas.dmtf.org/ovf/envelope/1'><References>");
        for i in 0..40_000 {
            doc.push_str(&format!("<File ovf:id='f{i}' ovf:href='h{i}'/>"));
        }
        doc.push_str("</References><DiskSection>");
        for i in 0..40_000 {
            doc.push_str(&format!(
                "<Disk ovf:diskId='d{i}' ovf:fileRef='f{}' ovf:capacity='1'/>",
                39_999 - i
            ));
        }
        doc.push_str("</DiskSection></Envelope>");
        let p = open_mem(with_descriptor(doc.as_bytes())).unwrap();
        assert_eq!(p.disks().len(), 40_000);
        assert!(matches!(
            p.disks()[0].data,
            vdisk_ova::DiskData::Missing { .. }
        ));
    });

    timed("20 000 drives and 20 000 controllers", &mut || {
        let mut doc = String::from("<Envelope xmlns='http://schemas.dmtf.org/ovf/envelope/1' xmlns:ovf='http://schemas.dmtf.org/ovf/envelope/1' xmlns:r='r'><VirtualSystem ovf:id='v'><VirtualHardwareSection>");
        for i in 0..20_000 {
            doc.push_str(&format!(
                "<Item><r:InstanceID>c{i}</r:InstanceID><r:ResourceType>6</r:ResourceType></Item>"
            ));
        }
        for i in 0..20_000 {
            doc.push_str(&format!(
                "<Item><r:Parent>c{}</r:Parent><r:ResourceType>17</r:ResourceType></Item>",
                19_999 - i
            ));
        }
        doc.push_str("</VirtualHardwareSection></VirtualSystem></Envelope>");
        let p = open_mem(with_descriptor(doc.as_bytes())).unwrap();
        let Some(vdisk_ova::ovf::Content::System(s)) = &p.envelope().content else {
            panic!("a system")
        };
        assert_eq!(s.hardware[0].drives.len(), 20_000);
        assert!(s.hardware[0].drives.iter().all(|d| d.controller.is_some()));
    });

    let peak = peak_kib();
    for (what, t) in &cases {
        assert!(*t < Duration::from_secs(10), "{what} took {t:?}");
        eprintln!("{what}: {t:?}");
    }
    eprintln!("peak memory {base_peak} KiB -> {peak} KiB");
    // The largest inputs are held in memory by the test itself (an 8 MiB descriptor in a package,
    // copies of it); what vdisk-ova adds is bounded by its limits.
    assert!(
        peak < base_peak + 192 * 1024,
        "peak memory grew from {base_peak} KiB to {peak} KiB"
    );
}
