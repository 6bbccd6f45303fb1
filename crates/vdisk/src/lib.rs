//! vdisk (being written).
