//! Tests against the qemu-img / qemu-io oracle: fixtures built at test time with
//! `qemu-img create -f vpc` and qemu-io, bytes compared with `qemu-img convert -O raw`, maps with
//! `qemu-img map`, sizes with `qemu-img info`, damaged images with whether qemu opens them,
//! images vdisk writes against the same images made by qemu-img and qemu-io, and images vdisk
//! writes into in place against `qemu-img convert -n`.

#[path = "oracle/fixtures.rs"]
mod fixtures;
#[path = "oracle/inplace.rs"]
mod inplace;
#[path = "oracle/malformed.rs"]
mod malformed;
#[path = "oracle/read.rs"]
mod read;
#[path = "oracle/size.rs"]
mod size;
#[path = "oracle/write.rs"]
mod write;
