//! Archive and descriptor builders shared by the unit tests and the integration tests
//! (`tests/common`): hand-made tar headers (IEEE 1003.1 ustar, GNU) and OVF samples.

#[path = "../tests/common/samples.rs"]
pub mod samples;
#[path = "../tests/common/tarbuild.rs"]
pub mod tarbuild;
