//! Hostile input: crafted images (valid qemu-img images with patched bytes, or built from scratch)
//! that must give a clear error - through the facade and through the built `vdisk` CLI (exit code 1,
//! no panic) - and never panic, hang or allocate hugely; backing-chain loops; truncations and
//! maximal header fields of every format; sources that are never modified; bounded memory on huge
//! images; and the regression tests of the fuzzing findings (fuzz/README.md).

#[path = "hostile/util.rs"]
mod util;

#[path = "hostile/qcow2.rs"]
mod qcow2;

#[path = "hostile/formats.rs"]
mod formats;

#[path = "hostile/vhd_vhdx.rs"]
mod vhd_vhdx;

#[path = "hostile/chains.rs"]
mod chains;

#[path = "hostile/memory.rs"]
mod memory;

#[path = "hostile/findings.rs"]
mod findings;

#[global_allocator]
static ALLOC: util::Tracking = util::Tracking;
