//! VMDK text descriptors ("The Descriptor File"): strict and embedded parsing of any bytes, and a
//! parsed descriptor must render to text that parses back to the same descriptor.
#![no_main]
use libfuzzer_sys::fuzz_target;
use vdisk_vmdk::descriptor::Descriptor;

fuzz_target!(|data: &[u8]| {
    let _ = Descriptor::parse_embedded(data);
    if let Ok(d) = Descriptor::parse(data) {
        let _ = d.ddb_value("ddb.adapterType");
        let text = d.render();
        let again = Descriptor::parse(text.as_bytes()).expect("a rendered descriptor parses");
        assert_eq!(
            again.render(),
            text,
            "descriptor does not round-trip through render"
        );
    }
});
