//! vdisk-vmdk (being written).
