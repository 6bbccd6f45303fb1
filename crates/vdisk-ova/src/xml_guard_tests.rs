//! Tests of the markup pre-scan's limits.

use super::*;

fn nested(depth: usize) -> String {
    "<a>".repeat(depth) + &"</a>".repeat(depth)
}

#[test]
fn nesting_is_bounded() {
    assert_eq!(check(nested(MAX_XML_DEPTH).as_bytes()), Ok(()));
    let e = check(nested(MAX_XML_DEPTH + 1).as_bytes()).unwrap_err();
    assert_eq!(
        (e.what, e.limit),
        ("XML element nesting depth", MAX_XML_DEPTH as u64)
    );
    // Siblings and self-closed elements do not add up.
    let flat = "<r>".to_string() + &"<a/><b x='1'></b>".repeat(10_000) + "</r>";
    assert_eq!(check(flat.as_bytes()), Ok(()));
    // A million open elements are stopped at the limit.
    assert!(check("<a>".repeat(1 << 20).as_bytes()).is_err());
}

#[test]
fn attributes_are_bounded_per_element_and_in_all() {
    let el = |n: usize| {
        let attrs: String = (0..n).map(|i| format!(" a{i}=\"v\"")).collect();
        format!("<e{attrs}/>")
    };
    assert_eq!(check(el(MAX_XML_ATTRIBUTES_PER_ELEMENT).as_bytes()), Ok(()));
    let e = check(el(MAX_XML_ATTRIBUTES_PER_ELEMENT + 1).as_bytes()).unwrap_err();
    assert_eq!(e.what, "number of attributes of one XML element");
    let many = el(200).repeat(MAX_XML_ATTRIBUTES / 200 + 1);
    let e = check(many.as_bytes()).unwrap_err();
    assert_eq!(e.what, "number of XML attributes");
}

#[test]
fn quoted_values_comments_and_cdata_are_not_markup() {
    // '=' and '>' inside values, text, comments, CDATA and PIs count for nothing.
    let doc = format!(
        "<?xml version='1.0'?><!-- {} --><r v=\"a>b=c\" w='x=\"y\"'>{}<![CDATA[{}]]>text = more</r>",
        "<a b=1>".repeat(100),
        "=".repeat(1000),
        "<c d=1>".repeat(100)
    );
    assert_eq!(check(doc.as_bytes()), Ok(()));
    // Many '=' in a value, in either quote, are not attributes.
    let eqs = "=".repeat(MAX_XML_ATTRIBUTES_PER_ELEMENT * 2);
    let doc = format!("<r a=\"{eqs}\" b='{eqs}'/>");
    assert_eq!(check(doc.as_bytes()), Ok(()));
    // An element inside a comment does not nest.
    let doc = format!("<r><!--{}--></r>", "<a>".repeat(MAX_XML_DEPTH * 2));
    assert_eq!(check(doc.as_bytes()), Ok(()));
}

#[test]
fn namespace_declarations_are_bounded() {
    let decls: String = (0..MAX_XML_NAMESPACE_DECLARATIONS)
        .map(|i| format!("<a xmlns:n{i}='u{i}'>"))
        .collect();
    // Nesting stops it first here; flat declarations are counted anyway.
    let flat: String = (0..=MAX_XML_NAMESPACE_DECLARATIONS)
        .map(|i| format!("<a xmlns:n{i}='u{i}'/>"))
        .collect();
    assert!(check(decls.as_bytes()).is_err());
    let e = check(flat.as_bytes()).unwrap_err();
    assert_eq!(e.what, "number of XML namespace declarations");
}
