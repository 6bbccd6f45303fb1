//! Tests against the qemu-img / qemu-io oracle: fixtures built at test time with
//! `qemu-img create -f vhdx` and qemu-io, bytes compared with `qemu-img convert -O raw`, maps with
//! `qemu-img map`, sizes with `qemu-img info`, and damaged images with whether qemu opens them; images
//! vdisk writes against `qemu-img create` / `convert -O vhdx` of the same input, and images written in
//! place against `qemu-img convert -n -O vhdx`.

#[path = "oracle/fixtures.rs"]
mod fixtures;
#[path = "oracle/inplace.rs"]
mod inplace;
#[path = "oracle/inplace_refuse.rs"]
mod inplace_refuse;
#[path = "oracle/malformed.rs"]
mod malformed;
#[path = "oracle/read.rs"]
mod read;
#[path = "oracle/write.rs"]
mod write;
