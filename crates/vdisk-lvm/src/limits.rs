//! Named bounds on what an untrusted LVM2 physical volume may make vdisk-lvm do: each says which
//! on-disk field it bounds. Values past a limit are refused with [`vdisk_core::Error::Limit`]
//! before anything proportional to them is allocated.

/// The longest volume group metadata text read (`raw_locn.size` of the metadata area header):
/// lvm2 keeps it within the metadata area, 1020 KiB by default (`pvcreate --metadatasize`
/// makes it larger; volume groups with thousands of volumes need a few MiB).
pub const MAX_METADATA_BYTES: u64 = 16 << 20;

/// The deepest nesting of sections in the metadata text (lvm2 writes four: volume group,
/// `logical_volumes`, the volume, its segment).
pub const MAX_CONFIG_DEPTH: usize = 16;

/// The most values (sections, keys, array items) in one metadata text.
pub const MAX_CONFIG_VALUES: usize = 1 << 20;

/// The most physical volumes of one volume group read.
pub const MAX_PVS: usize = 4096;

/// The most logical volumes of one volume group read.
pub const MAX_LVS: usize = 4096;

/// The most segments of one logical volume (each becomes a piece of its reader).
pub const MAX_SEGMENTS: usize = 65536;
