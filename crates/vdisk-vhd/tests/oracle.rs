//! Tests against the qemu-img / qemu-io oracle: fixtures built at test time with
//! `qemu-img create -f vpc` and qemu-io, bytes compared with `qemu-img convert -O raw`, maps with
//! `qemu-img map`, sizes with `qemu-img info`, damaged images with whether qemu opens them, and
//! images vdisk writes against the same images made by qemu-img and qemu-io.

#[path = "oracle/fixtures.rs"]
mod fixtures;
#[path = "oracle/malformed.rs"]
mod malformed;
#[path = "oracle/read.rs"]
mod read;
#[path = "oracle/size.rs"]
mod size;
#[path = "oracle/write.rs"]
mod write;
