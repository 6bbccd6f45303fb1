//! The checks qemu's vmdk driver makes of the descriptor of the image it opens (QEMU 10
//! block/vmdk.c vmdk_parent_open and vmdk_read_cid), which VMware's "The Descriptor File" does not
//! state but every descriptor VMware and qemu-img write passes: a `parentFileNameHint` value ends
//! with a quote within 4095 bytes, and `CID` and `parentCID` are hexadecimal numbers. QEMU reads
//! 20 sectors of descriptor (zeros past the end of the file), searches them as one C string
//! (`strstr`, so the first match anywhere counts, even inside another word) and parses the
//! number after the match with `sscanf("%x")`; this module does the same, so that vdisk opens
//! exactly the descriptors qemu-img opens. Pure: no I/O.

use vdisk_core::StoredName;

/// How much descriptor QEMU reads for these checks (`DESC_SIZE`: 20 sectors).
pub const QEMU_DESC_BYTES: usize = 20 * 512;

/// The longest `parentFileNameHint` QEMU takes (its backing file name buffer, PATH_MAX, less the
/// terminating NUL).
const MAX_HINT: usize = 4095;

/// The C string QEMU's buffer holds from byte `at` of `region` (the descriptor bytes read, zeros
/// after them) up to its first NUL, within the first `limit` bytes: vmdk_parent_open's buffer
/// has a NUL after the 20 sectors, vmdk_read_cid puts one over their last byte.
fn c_str_at(region: &[u8], at: usize, limit: usize) -> &[u8] {
    let r = region.get(..region.len().min(limit)).unwrap_or(&[]);
    let r = r.get(at..).unwrap_or(&[]);
    let end = r.iter().position(|b| *b == 0).unwrap_or(r.len());
    &r[..end]
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Whether `sscanf(s, "%x")` converts a number: white space, an optional sign, an optional `0x`
/// (whose `0` alone is a number, as glibc reads it), then at least one hexadecimal digit.
fn scans_hex(s: &[u8]) -> bool {
    let mut i = 0;
    while s.get(i).is_some_and(|b| b" \t\n\x0b\x0c\r".contains(b)) {
        i += 1;
    }
    if matches!(s.get(i), Some(b'+' | b'-')) {
        i += 1;
    }
    s.get(i).is_some_and(u8::is_ascii_hexdigit)
}

/// QEMU's open-time checks of the descriptor `region` (the bytes at the descriptor's offset: 0
/// for a descriptor file, 512 for a hosted sparse file whatever its header says). The error says
/// which check failed; qemu-img says only "Invalid argument".
pub fn qemu_descriptor_checks(region: &[u8]) -> Result<(), String> {
    parent_hint(region)?;
    let text = c_str_at(region, 0, QEMU_DESC_BYTES - 1);
    for key in ["CID", "parentCID"] {
        let Some(at) = find(text, key.as_bytes()) else {
            return Err(format!("the descriptor has no {key}"));
        };
        // QEMU skips the key and one character (`=`).
        if !scans_hex(c_str_at(region, at + key.len() + 1, QEMU_DESC_BYTES - 1)) {
            return Err(format!("{key} is not a hexadecimal number"));
        }
    }
    Ok(())
}

/// The parent file name QEMU reads (vmdk_parent_open): after the first `parentFileNameHint`
/// anywhere in `region` (up to its first NUL), two bytes on (`="`, whatever they are), up to the
/// next quote, byte for byte; none without the key. An error when the quote is missing or too
/// far, as qemu-img refuses the image then.
fn parent_hint(region: &[u8]) -> Result<Option<&[u8]>, String> {
    const KEY: &[u8] = b"parentFileNameHint";
    let text = c_str_at(region, 0, QEMU_DESC_BYTES);
    let Some(at) = find(text, KEY) else {
        return Ok(None);
    };
    // Past the string's end if it ends there.
    let name = c_str_at(region, at + KEY.len() + 2, QEMU_DESC_BYTES);
    match name.iter().position(|b| *b == b'"') {
        None => Err("parentFileNameHint has no closing quote".into()),
        Some(n) if n > MAX_HINT => Err(format!(
            "parentFileNameHint is longer than {MAX_HINT} bytes"
        )),
        Some(n) => Ok(Some(&name[..n])),
    }
}

/// The parent (backing) file name of the image whose descriptor `region` is (as for
/// [`qemu_descriptor_checks`], which must have passed), as QEMU takes it: `Some` of the bytes
/// after `parentFileNameHint="` up to the next quote, UTF-8 or not, possibly empty (which QEMU
/// shows but does not open).
pub fn qemu_parent_hint(region: &[u8]) -> Option<StoredName> {
    parent_hint(region)
        .ok()
        .flatten()
        .map(StoredName::from_stored)
}

/// The createType QEMU reads from a descriptor file (vmdk_parse_description): after the first
/// `createType` anywhere in the text (up to its first NUL), two bytes on (`="`), up to the next
/// quote; none when there is no match or no quote, or when the value does not fit QEMU's
/// 128-byte buffer (qemu-img: "invalid VMDK image descriptor").
pub fn qemu_create_type(text: &[u8]) -> Option<String> {
    const KEY: &[u8] = b"createType";
    let text = c_str_at(text, 0, usize::MAX);
    let at = find(text, KEY)? + KEY.len() + 2;
    let value = text.get(at..).filter(|v| !v.is_empty())?;
    let len = value.iter().position(|b| *b == b'"')?;
    (len < 128).then(|| String::from_utf8_lossy(&value[..len]).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &[u8] = b"# Disk DescriptorFile\nversion=1\nCID=1479de7f\nparentCID=ffffffff\n\
        createType=\"monolithicSparse\"\n";

    #[test]
    fn descriptors_qemu_writes_pass() {
        assert_eq!(qemu_descriptor_checks(GOOD), Ok(()));
        let with_hint = [GOOD, b"parentFileNameHint=\"base.vmdk\"\n"].concat();
        assert_eq!(qemu_descriptor_checks(&with_hint), Ok(()));
    }

    #[test]
    fn cid_and_parent_cid_are_required() {
        let no_cid = b"version=1\nparentXID=ffffffff\n";
        assert!(qemu_descriptor_checks(no_cid)
            .unwrap_err()
            .contains("no CID"));
        let no_parent = b"version=1\nCID=12\n";
        assert!(qemu_descriptor_checks(no_parent)
            .unwrap_err()
            .contains("no parentCID"));
        let bad = b"CID=xyz\nparentCID=ffffffff\n";
        assert!(qemu_descriptor_checks(bad)
            .unwrap_err()
            .contains("CID is not"));
    }

    #[test]
    fn matches_are_found_as_qemu_finds_them() {
        // "CID" first matches inside "parentCID": QEMU then parses "ffffffff" for both.
        assert_eq!(qemu_descriptor_checks(b"parentCID=ffffffff\n"), Ok(()));
        // Whatever follows the key by one byte is parsed, with a sign, spaces or 0x.
        assert_eq!(qemu_descriptor_checks(b"CID: -0x5 parentCID=\t+a"), Ok(()));
        assert_eq!(qemu_descriptor_checks(b"CID=0xz parentCID=0"), Ok(()));
        // A NUL ends the text: a CID after it is not seen.
        assert!(qemu_descriptor_checks(b"\0CID=1 parentCID=1").is_err());
        // The key at the very end: QEMU reads the zeros after it.
        assert!(qemu_descriptor_checks(b"CID")
            .unwrap_err()
            .contains("CID is not"));
        // The last byte of the 20 sectors is part of the text the parent hint is looked for in,
        // not of the one the CIDs are.
        let mut long = vec![b' '; QEMU_DESC_BYTES + 100];
        long[..20].copy_from_slice(b"CID=1 parentCID=1   ");
        assert_eq!(qemu_descriptor_checks(&long), Ok(()));
        long[QEMU_DESC_BYTES - 18..QEMU_DESC_BYTES].copy_from_slice(b"parentFileNameHint");
        assert!(qemu_descriptor_checks(&long)
            .unwrap_err()
            .contains("closing quote"));
        let mut cid_last = vec![b' '; QEMU_DESC_BYTES];
        cid_last[..12].copy_from_slice(b"parentCID=1 ");
        cid_last[QEMU_DESC_BYTES - 3..].copy_from_slice(b"CID");
        // "CID" matches inside "parentCID" first; only the last byte's "D" is cut.
        assert_eq!(qemu_descriptor_checks(&cid_last), Ok(()));
    }

    #[test]
    fn parent_hints_need_a_closing_quote_within_the_limit() {
        let open = [GOOD, b"parentFileNameHint=\"base.vmdk\n"].concat();
        assert!(qemu_descriptor_checks(&open)
            .unwrap_err()
            .contains("closing quote"));
        let long = [
            GOOD,
            b"parentFileNameHint=\"",
            &vec![b'a'; MAX_HINT + 1],
            b"\"\n",
        ]
        .concat();
        assert!(qemu_descriptor_checks(&long)
            .unwrap_err()
            .contains("longer"));
        let just = [
            GOOD,
            b"parentFileNameHint=\"",
            &vec![b'a'; MAX_HINT],
            b"\"\n",
        ]
        .concat();
        assert_eq!(qemu_descriptor_checks(&just), Ok(()));
    }

    #[test]
    fn parent_hints_are_read_as_qemu_reads_them() {
        let h = |s: &[u8]| qemu_parent_hint(s).map(|n| n.as_bytes().to_vec());
        assert_eq!(h(GOOD), None);
        let hint = |v: &[u8]| h(&[GOOD, b"parentFileNameHint", v].concat());
        assert_eq!(hint(b"=\"base.vmdk\"\n"), Some(b"base.vmdk".to_vec()));
        // The name's bytes, UTF-8 or not.
        assert_eq!(hint(b"=\"caf\xe9.vmdk\"\n"), Some(b"caf\xe9.vmdk".to_vec()));
        // Two bytes skipped whatever they are: with spaces around `=` the name is what is left
        // before the next quote (" " here, empty with one space), as qemu-img shows it.
        assert_eq!(hint(b" = \"base.vmdk\"\n"), Some(b" ".to_vec()));
        assert_eq!(hint(b"= \"base.vmdk\"\n"), Some(Vec::new()));
        // The first match anywhere, even in a comment.
        assert_eq!(
            h(b"# parentFileNameHint: x\"\nparentFileNameHint=\"b\"\n"),
            Some(b"x".to_vec())
        );
        assert_eq!(hint(b"=\"open\n"), None);
    }

    #[test]
    fn create_type_is_read_as_qemu_reads_it() {
        let t = |s: &[u8]| qemu_create_type(s);
        assert_eq!(t(b"createType=\"vmfs\"\n").as_deref(), Some("vmfs"));
        // The first match anywhere, even in a comment; two bytes skipped whatever they are.
        assert_eq!(
            t(b"# createType: 'x\"\ncreateType=\"vmfs\"").as_deref(),
            Some("'x")
        );
        assert_eq!(t(b"createType=\"monolithicFlat").as_deref(), None);
        assert_eq!(t(b"createType=\"").as_deref(), None);
        assert_eq!(t(b"CreateType=\"vmfs\"").as_deref(), None);
        assert_eq!(t(b"\0createType=\"vmfs\"").as_deref(), None);
        let long = [b"createType=\"".as_slice(), &[b'a'; 128], b"\""].concat();
        assert_eq!(t(&long), None);
        let fits = [b"createType=\"".as_slice(), &[b'a'; 127], b"\""].concat();
        assert_eq!(t(&fits).map(|v| v.len()), Some(127));
    }
}
