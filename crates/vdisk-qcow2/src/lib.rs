//! vdisk-qcow2 (being written).
