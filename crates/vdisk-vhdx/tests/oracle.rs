//! Tests against the qemu-img / qemu-io oracle: fixtures built at test time with
//! `qemu-img create -f vhdx` and qemu-io, bytes compared with `qemu-img convert -O raw`, maps with
//! `qemu-img map`, sizes with `qemu-img info`, and damaged images with whether qemu opens them.

#[path = "oracle/fixtures.rs"]
mod fixtures;
#[path = "oracle/malformed.rs"]
mod malformed;
#[path = "oracle/read.rs"]
mod read;
