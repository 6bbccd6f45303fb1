//! Round-trip properties (issue 9, "Properties and invariants"): a random source disk (data of
//! several kinds, explicit zeros and holes at unaligned, cluster-crossing and end-touching places)
//! is converted through the library into every writable format with random options and random
//! engine settings, then read back with vdisk (from several threads) and compared byte for byte,
//! mapped as `qemu-img map` maps it, checked by vdisk, and held against `qemu-img compare` and
//! `qemu-img check`; the source file must be left unchanged. `convert -n` is checked the same way
//! on images qemu made and filled, the allocation vdisk's conversion leaves is compared with
//! `qemu-img convert`'s, and random `-o` sets (valid or not) must be accepted exactly when
//! qemu-img accepts them; a second hop converts vdisk's output (flattening its backing chain)
//! into another random format. A failing case prints the source disk, the equivalent command
//! line and the engine settings. `PROPTEST_CASES=N` runs N cases per property.

#[path = "roundtrip/disk.rs"]
mod disk;
#[path = "roundtrip/existing.rs"]
mod existing;
#[path = "roundtrip/options.rs"]
mod options;
#[path = "roundtrip/parity.rs"]
mod parity;
#[path = "roundtrip/run.rs"]
mod run;
#[path = "roundtrip/target.rs"]
mod target;

use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use run::roundtrip;
use vdisk_testutil::qemu_available;

/// Cases per format: each case writes a few MiB, converts, reads back and runs qemu-img two or
/// three times, so these keep the whole file within about a minute of a debug build on 2 cores.
/// `PROPTEST_CASES` overrides them for a longer hunt.
fn config(cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(cases);
    ProptestConfig {
        cases,
        // Each case runs qemu-img: bound the shrinking so a failure is reported in minutes.
        max_shrink_iters: 256,
        failure_persistence: Some(Box::new(FileFailurePersistence::Direct(
            "tests/roundtrip/regressions.txt",
        ))),
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn qcow2_roundtrip(
        disk in disk::disk(),
        target in target::qcow2(),
        engine in target::engine(),
    ) {
        if !qemu_available() {
            return Ok(());
        }
        roundtrip(&disk, &target, &engine)?;
    }
}

proptest! {
    #![proptest_config(config(20))]

    #[test]
    fn vmdk_roundtrip(disk in disk::disk(), target in target::vmdk(), engine in target::engine()) {
        if !qemu_available() {
            return Ok(());
        }
        roundtrip(&disk, &target, &engine)?;
    }
}

proptest! {
    #![proptest_config(config(12))]

    #[test]
    fn vdi_roundtrip(disk in disk::disk(), target in target::vdi(), engine in target::engine()) {
        if !qemu_available() {
            return Ok(());
        }
        roundtrip(&disk, &target, &engine)?;
    }
}

proptest! {
    #![proptest_config(config(10))]

    #[test]
    fn vhd_roundtrip(disk in disk::disk(), target in target::vhd(), engine in target::engine()) {
        if !qemu_available() {
            return Ok(());
        }
        roundtrip(&disk, &target, &engine)?;
    }
}

proptest! {
    #![proptest_config(config(10))]

    #[test]
    fn vhdx_roundtrip(disk in disk::disk(), target in target::vhdx(), engine in target::engine()) {
        if !qemu_available() {
            return Ok(());
        }
        roundtrip(&disk, &target, &engine)?;
    }
}

proptest! {
    #![proptest_config(config(10))]

    #[test]
    fn raw_roundtrip(disk in disk::disk(), target in target::raw(), engine in target::engine()) {
        if !qemu_available() {
            return Ok(());
        }
        roundtrip(&disk, &target, &engine)?;
    }
}

proptest! {
    #![proptest_config(config(24))]

    #[test]
    fn into_existing_roundtrip(
        (disk, existing) in existing::into_existing(),
        engine in target::engine(),
    ) {
        if !qemu_available() {
            return Ok(());
        }
        existing::roundtrip_into_existing(&disk, &existing, &engine)?;
    }
}

proptest! {
    #![proptest_config(config(20))]

    #[test]
    fn parity_with_qemu_img_convert(
        disk in disk::disk(),
        target in prop_oneof![
            target::qcow2(),
            target::vmdk(),
            target::vdi(),
            target::vhd(),
            target::vhdx(),
            target::raw()
        ],
        engine in target::engine(),
    ) {
        if !qemu_available() {
            return Ok(());
        }
        let target = parity::without_known_differences(target);
        parity::parity(&disk, &target, &engine)?;
    }
}

proptest! {
    #![proptest_config(config(32))]

    #[test]
    fn options_accepted_like_qemu_img(attempt in options::attempt()) {
        if !qemu_available() {
            return Ok(());
        }
        options::same_acceptance(&attempt)?;
    }
}

/// Any writable format with random options, with no backing file (for the second hop).
fn any_target() -> impl Strategy<Value = target::Target> {
    prop_oneof![
        target::qcow2(),
        target::vmdk(),
        target::vdi(),
        target::vhd(),
        target::vhdx(),
        target::raw()
    ]
    .prop_map(|t| target::Target { backing: None, ..t })
}

proptest! {
    #![proptest_config(config(12))]

    #[test]
    fn two_hops_roundtrip(
        disk in disk::disk(),
        first in prop_oneof![target::qcow2(), target::vmdk(), target::vdi(), target::raw()],
        e1 in target::engine(),
        second in any_target(),
        e2 in target::engine(),
    ) {
        if !qemu_available() {
            return Ok(());
        }
        run::second_hop(&disk, &first, &e1, &second, &e2)?;
    }
}

/// Regression cases the parity property found once `-S` above the cluster size was allowed: a
/// raw source of one data byte at 0, a hole, an extent of explicit zeros (0x19000..0x20001, so the
/// file's data extent runs to 0x21000) and a hole to the end. qemu-img reads the zero extent as a
/// buffer of its own (a leading zero run, never written), so no cluster beyond the first is
/// allocated; vdisk used to read 0..0x30000 as one buffer whose data run, widened to the `-S`
/// alignment, swallowed the zeros and allocated clusters 1 and 2.
#[test]
fn qcow2_sparse_size_above_cluster_size_leaves_zero_extents_after_a_hole_unallocated() {
    if !qemu_available() {
        return;
    }
    use disk::{Disk, Extent, Fill, K, M};
    let disk = Disk {
        len: 0x79400,
        extents: vec![
            Extent {
                offset: 0x19000,
                len: 0x7001,
                fill: Fill::Zeros,
            },
            Extent {
                offset: 0,
                len: 1,
                fill: Fill::Random(0),
            },
        ],
    };
    for cluster in [64 * K, 128 * K, 2 * M] {
        for min_sparse in [64 * K, 128 * K, M] {
            let target = target::Target {
                format: vdisk::Format::Qcow2,
                opts: vec![("cluster_size", cluster.to_string())],
                compress: false,
                backing: None,
            };
            let engine = target::Engine {
                workers: 2,
                out_of_order: false,
                min_sparse,
                chunk_size: 2 * M,
                target_is_zero: false,
                read_chunk: 65536,
                read_threads: 1,
            };
            if let Err(e) = parity::parity(&disk, &target, &engine) {
                panic!("cluster_size={cluster} -S {min_sparse}: {e}");
            }
        }
    }
}

/// `-c` into a monolithicSparse VMDK is written uncompressed, but qemu-img still takes its
/// compressed path (`convert_iteration_sectors` rounds to whole grains and `convert_co_write` skips
/// a grain only when it is all zeros, whatever `-S`): with `-S 1M` the all-zero grain
/// 0x10000..0x20000 after a 9-byte data extent stays unallocated. vdisk used `-S`'s rules there and
/// allocated it.
#[test]
fn compressed_monolithic_sparse_vmdk_judges_zeros_per_grain() {
    if !qemu_available() {
        return;
    }
    use disk::{Disk, Extent, Fill, K, M};
    let disk = Disk {
        len: 0x4b000,
        extents: vec![
            Extent {
                offset: 0,
                len: 9,
                fill: Fill::Random(0),
            },
            Extent {
                offset: 4,
                len: 0xfffd,
                fill: Fill::Zeros,
            },
        ],
    };
    for min_sparse in [4 * K, 64 * K, M] {
        let target = target::Target {
            format: vdisk::Format::Vmdk,
            opts: Vec::new(),
            compress: true,
            backing: None,
        };
        let engine = target::Engine {
            workers: 1,
            out_of_order: false,
            min_sparse,
            chunk_size: 64 * K,
            target_is_zero: false,
            read_chunk: 512,
            read_threads: 1,
        };
        if let Err(e) = parity::parity(&disk, &target, &engine) {
            panic!("-S {min_sparse}: {e}");
        }
    }
}
