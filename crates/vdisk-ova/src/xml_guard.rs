//! A linear scan of an XML document's markup before it is parsed, bounding what would make the
//! parser slow or large (see [`crate::limits`]): element nesting, attributes on one element and in
//! all, and namespace declarations. It follows XML 1.0's lexical structure (comments, CDATA
//! sections, processing instructions and declarations are skipped; quoted attribute values may
//! hold `>`), which is all it needs to count; well-formedness is left to the parser.

use crate::limits::{
    MAX_XML_ATTRIBUTES, MAX_XML_ATTRIBUTES_PER_ELEMENT, MAX_XML_DEPTH,
    MAX_XML_NAMESPACE_DECLARATIONS,
};

/// A limit the document goes over: what, its value (as far as counted), the limit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exceeded {
    pub what: &'static str,
    pub value: u64,
    pub limit: u64,
}

fn over(what: &'static str, value: usize, limit: usize) -> Exceeded {
    Exceeded {
        what,
        value: value as u64,
        limit: limit as u64,
    }
}

/// Checks `text` against the limits.
pub fn check(text: &[u8]) -> Result<(), Exceeded> {
    let xmlns = count(text, b"xmlns");
    if xmlns > MAX_XML_NAMESPACE_DECLARATIONS {
        return Err(over(
            "number of XML namespace declarations",
            xmlns,
            MAX_XML_NAMESPACE_DECLARATIONS,
        ));
    }
    let n = text.len();
    let mut i = 0;
    let mut depth = 0usize;
    let mut attributes = 0usize;
    while i < n {
        let Some(lt) = text[i..].iter().position(|&c| c == b'<') else {
            break;
        };
        i += lt;
        let rest = &text[i..];
        let skip_to = |open: usize, close: &[u8]| match find(&rest[open..], close) {
            Some(k) => i + open + k + close.len(),
            None => n,
        };
        if rest.starts_with(b"<!--") {
            i = skip_to(4, b"-->");
        } else if rest.starts_with(b"<![CDATA[") {
            i = skip_to(9, b"]]>");
        } else if rest.starts_with(b"<?") {
            i = skip_to(2, b"?>");
        } else if rest.starts_with(b"<!") {
            i = skip_to(2, b">");
        } else if rest.starts_with(b"</") {
            depth = depth.saturating_sub(1);
            i = skip_to(2, b">");
        } else {
            depth += 1;
            if depth > MAX_XML_DEPTH {
                return Err(over("XML element nesting depth", depth, MAX_XML_DEPTH));
            }
            let mut quote: Option<u8> = None;
            let mut here = 0usize;
            let mut j = i + 1;
            while j < n {
                let c = text[j];
                match quote {
                    Some(q) if c == q => quote = None,
                    Some(_) => {}
                    None if c == b'"' || c == b'\'' => quote = Some(c),
                    None if c == b'=' => here += 1,
                    None if c == b'>' => {
                        if text[j - 1] == b'/' {
                            depth -= 1;
                        }
                        break;
                    }
                    None => {}
                }
                j += 1;
            }
            if here > MAX_XML_ATTRIBUTES_PER_ELEMENT {
                return Err(over(
                    "number of attributes of one XML element",
                    here,
                    MAX_XML_ATTRIBUTES_PER_ELEMENT,
                ));
            }
            attributes += here;
            if attributes > MAX_XML_ATTRIBUTES {
                return Err(over(
                    "number of XML attributes",
                    attributes,
                    MAX_XML_ATTRIBUTES,
                ));
            }
            i = j + 1;
        }
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn count(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).filter(|w| *w == needle).count()
}

#[cfg(test)]
#[path = "xml_guard_tests.rs"]
mod tests;
