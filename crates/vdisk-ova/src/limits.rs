//! Named limits on values read from OVA packages and OVF descriptors, so that no hostile archive,
//! descriptor or manifest can make vdisk allocate, read or loop without bound. Each names where it
//! comes from: the tar format (IEEE 1003.1 `pax`, "ustar Interchange Format" and "pax Interchange
//! Format"), GNU tar's behaviour, DMTF DSP0243 (OVF), or the size of real exports.
//!
//! Memory of an opened package, whatever its archive holds: at most [`MAX_MEMBERS`] members of
//! about 64 bytes plus their names, which share [`MAX_TOTAL_NAME_BYTES`] (about 12 MiB in all);
//! the descriptor text ([`MAX_DESCRIPTOR_BYTES`]) and its parse tree while it is parsed (at most
//! [`MAX_XML_NODES`] nodes and [`MAX_XML_ATTRIBUTES`] attributes, about 40 MiB at worst); the
//! manifest ([`MAX_MANIFEST_BYTES`]). Reading a member or checking a digest holds one buffer of
//! [`DIGEST_CHUNK_BYTES`].

/// Bytes in a tar block: every header and every member's data padding is counted in these
/// (pax, "ustar Interchange Format": "a logical record of 512 octets").
pub const BLOCK: u64 = 512;

/// Most regular-file members indexed in one archive. An OVA holds a descriptor, a manifest, a
/// certificate and its disks (DSP0243 5.3 "Distribution as a single file"), or their chunks
/// (DSP0243 7.1 "File references", `ovf:chunkSize`): a 2 TiB disk cut in 64 MiB chunks is 32768
/// members. An archive with more is refused rather than indexed without bound.
pub const MAX_MEMBERS: usize = 1 << 16;

/// Most header blocks walked in one archive, of every type (files, directories, links, pax and
/// GNU extension headers): four for each of [`MAX_MEMBERS`] members (a pax header, a GNU long name,
/// a long link name and the member's own header). Walking costs one 512-byte read a header.
pub const MAX_HEADERS: u64 = 4 * MAX_MEMBERS as u64;

/// Longest member name, after a pax `path` record or a GNU 'L' long name is applied. Neither format
/// bounds it; 4096 is Linux's `PATH_MAX`, which no file GNU tar archives from a Linux file system
/// can exceed.
pub const MAX_NAME_BYTES: usize = 4096;

/// Bytes of member names kept for one archive (an average of 128 bytes a name over
/// [`MAX_MEMBERS`] members), so that the index stays small however long the names are.
pub const MAX_TOTAL_NAME_BYTES: usize = 8 << 20;

/// Largest data of one extension header (pax 'x' or 'g', GNU 'L' or 'K'), read into memory to be
/// parsed. GNU tar writes a few hundred bytes (times, a long path); extended attributes
/// (`--xattrs`, SELinux labels, ACLs) add a few KiB. A header claiming more is refused before
/// anything is read.
pub const MAX_EXTENSION_BYTES: u64 = 1 << 20;

/// Bytes of extension-header data read while walking one archive, so that many large pax headers
/// cannot make the walk read gigabytes.
pub const MAX_TOTAL_EXTENSION_BYTES: u64 = 16 << 20;

/// Largest OVF descriptor read and parsed. Exports from VirtualBox and ovftool are 5-50 KiB; the
/// largest vendor appliances (many deployment options, properties and a EULA) are a few hundred
/// KiB.
pub const MAX_DESCRIPTOR_BYTES: u64 = 8 << 20;

/// Most XML nodes (elements, text, comments) in a descriptor: roxmltree's `nodes_limit`, so its tree
/// stays under about 20 MiB. A descriptor with 50 virtual hardware items has about 2000.
pub const MAX_XML_NODES: u32 = 1 << 18;

/// Deepest element nesting in a descriptor. DSP0243's schema nests an Item's properties six levels
/// under the Envelope, more under nested VirtualSystemCollections; deeper documents are refused
/// before they are parsed.
pub const MAX_XML_DEPTH: usize = 64;

/// Most attributes on one element, counted before parsing: roxmltree checks each new attribute
/// against the element's earlier ones, quadratic in their number. An OVF Envelope declares about
/// 15 namespaces; other elements carry a handful of attributes.
pub const MAX_XML_ATTRIBUTES_PER_ELEMENT: usize = 256;

/// Most attributes in a descriptor, counted before parsing (about 48 bytes each in the parse tree).
pub const MAX_XML_ATTRIBUTES: usize = 1 << 18;

/// Most namespace declarations (`xmlns` attributes) in a descriptor, counted before parsing:
/// roxmltree copies the namespaces in scope into every element that declares one, so many nested
/// declarations would cost time and memory quadratic in their number. Exports declare them all on
/// the Envelope (about 15).
pub const MAX_XML_NAMESPACE_DECLARATIONS: usize = 256;

/// Largest manifest (`.mf`) read: one line of about 150 bytes a file (DSP0243 5.1 "OVF package
/// structure"), for [`MAX_MEMBERS`] files at most.
pub const MAX_MANIFEST_BYTES: u64 = 16 << 20;

/// Bytes read at a time when a member's digest is computed for `check`: the whole member is
/// streamed through the hash in pieces of this size, never held in memory.
pub const DIGEST_CHUNK_BYTES: usize = 1 << 20;

/// Most chunk files of one chunked file reference (DSP0243 7.1: files named `href.000000000`,
/// `href.000000001`, ...). The number has nine digits; a package cannot have more members than
/// [`MAX_MEMBERS`] anyway.
pub const MAX_CHUNKS: usize = MAX_MEMBERS;
