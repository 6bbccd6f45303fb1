//! vdisk-raw (being written).
