//! Filesystems (`vdisk_fs`) on the input as a raw device: ext2/3/4 (superblock, group descriptors,
//! inodes, extent trees and block maps, inline data, directories, symlinks), XFS v4 and v5
//! (superblock, inodes, extent lists and block-map btrees, short-form and block/leaf/node
//! directories, local and remote symlinks, AGFs for usage) and FAT12/16/32 (BPB, FAT chains, 8.3
//! and long-name entries), then what a client does: usage, a bounded walk of the
//! tree that goes on past damage (`vdisk_fs::walk::walk_listed`) reading every file and link,
//! and path resolution through each link. A journal that needs
//! recovery is replayed in memory first, and read as on disk when it cannot be. The first input byte
//! is the device's length in 64 KiB units (at least the rest of the input's length): the rest is
//! its start, zeros follow, so a short input stands for a filesystem of up to 16 MiB whose
//! metadata lies at its start (FAT16 needs 2 MiB).
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdisk_core::Error;
use vdisk_fs::walk::{walk_listed, Step};
use vdisk_fs::{FileKind, OpenOptions};
use vdisk_fuzz::{sized_device, READ_BUDGET};

/// Entries visited at most per input.
const MAX_ENTRIES: usize = 2000;

fuzz_target!(|data: &[u8]| {
    let Some(dev) = sized_device(data) else {
        return;
    };
    if !matches!(vdisk_fs::probe(dev.as_ref()), Ok(Some(_))) {
        return;
    }
    // As the CLI opens it: the journal replayed in memory when it needs recovery; what cannot be
    // replayed is then read as on disk (--ignore-journal).
    let fs = match vdisk_fs::open_with(dev.clone(), &OpenOptions::default()) {
        Ok(fs) => fs,
        Err(_) => {
            let opts = OpenOptions {
                ignore_journal_recovery: true,
            };
            let Ok(fs) = vdisk_fs::open_with(dev, &opts) else {
                return;
            };
            fs
        }
    };
    let _ = (fs.kind(), fs.label(), fs.uuid(), fs.usage());
    let Ok(root) = fs.root() else {
        return;
    };
    // A bounded walk that goes on past damage as `vdisk ls -R` does (`walk_listed`): an entry
    // whose node cannot be read passed over, each directory entered once.
    let (mut entries, mut read) = (0usize, 0u64);
    let mut buf = vec![0u8; 16 << 10];
    let _ = walk_listed(fs.as_ref(), &root, b"/", &mut |path, step| {
        let Step::Entry { dir, entry } = step else {
            return Ok(());
        };
        entries += 1;
        if entries > MAX_ENTRIES || read > READ_BUDGET {
            return Err(Error::invalid("the harness's budget is spent"));
        }
        let _ = fs.lookup(dir, &entry.name);
        let Ok(node) = entry.node else {
            return Ok(());
        };
        match node.kind {
            FileKind::Regular => {
                for at in [0, node.size.saturating_sub(buf.len() as u64)] {
                    if let Ok(n) = fs.read(&node, at, &mut buf) {
                        read += n as u64;
                    }
                }
            }
            FileKind::Symlink => {
                let _ = fs.read_link(&node);
                let _ = vdisk_fs::resolve(fs.as_ref(), path, true);
            }
            _ => {}
        }
        Ok(())
    });
});
