//! Log replay (`vdisk_vhdx::replay_log`, `repair`, and `open_writer` on a target whose log needs
//! replaying) against qemu-img: dirty logs left by qemu itself (a qemu-io write whose log flush is
//! made to fail under strace), crafted logs of every kind (several entries, zero descriptors, a
//! wrapped log, a log that grows the file, damaged and hostile ones), each replayed by
//! `qemu-img check -r all` on one copy and by vdisk on another and the results compared byte for
//! byte; crash points inside vdisk's replay; what `check -r` reports.

#[path = "replay/common.rs"]
mod common;
#[path = "replay/craft.rs"]
mod craft;
#[path = "replay/crafted.rs"]
mod crafted;
#[path = "replay/crash.rs"]
mod crash;
#[path = "replay/dirty.rs"]
mod dirty;
#[allow(dead_code)]
#[path = "oracle/fixtures.rs"]
mod fixtures;
#[path = "replay/refused.rs"]
mod refused;
#[path = "replay/repair.rs"]
mod repair;
