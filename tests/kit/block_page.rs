//! Reading SafeGate's block page as a browser would.

/// The hidden fields of the block page's review form, unescaped, as a browser sends them.
pub fn review_form_fields(page: &str) -> Vec<(String, String)> {
    let unescape = |text: &str| {
        text.replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&")
    };
    ["url", "rule", "categories", "token"]
        .iter()
        .map(|name| {
            let marker = format!("name=\"{name}\" value=\"");
            let start = page
                .find(&marker)
                .unwrap_or_else(|| panic!("no {name}: {page}"))
                + marker.len();
            let end = start + page[start..].find('"').unwrap();
            ((*name).to_owned(), unescape(&page[start..end]))
        })
        .collect()
}
