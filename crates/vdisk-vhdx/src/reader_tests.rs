use super::*;
use vdisk_core::MemStorage;

#[test]
fn not_vhdx_is_refused() {
    let e = open(MemStorage::new("x", vec![0u8; 4096]).shared())
        .err()
        .unwrap();
    assert!(e.to_string().contains("vhdxfile"), "{e}");
    let mut b = vec![0u8; 300 << 10];
    b[..8].copy_from_slice(b"vhdxfile");
    let e = open(MemStorage::new("x", b).shared()).err().unwrap();
    assert!(e.to_string().contains("No valid VHDX header found"), "{e}");
    assert!(open(MemStorage::new("x", Vec::new()).shared()).is_err());
}
