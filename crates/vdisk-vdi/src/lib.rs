//! vdisk-vdi (being written).
