//! vdisk-convert (being written).
