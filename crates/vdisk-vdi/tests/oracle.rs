//! Tests against the qemu-img / qemu-io oracle: fixtures built at test time, bytes compared with
//! `qemu-img convert -O raw`, maps with `qemu-img map`, written and resized images checked with
//! `qemu-img check` and `qemu-img compare`.

#[path = "oracle/check.rs"]
mod check;
#[path = "oracle/fixtures.rs"]
mod fixtures;
#[path = "oracle/inplace.rs"]
mod inplace;
#[path = "oracle/malformed.rs"]
mod malformed;
#[path = "oracle/read.rs"]
mod read;
#[path = "oracle/resize.rs"]
mod resize;
#[path = "oracle/write.rs"]
mod write;
