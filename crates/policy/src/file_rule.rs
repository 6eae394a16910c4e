//! File rules: "pupils may not download executables". A rule matches a request by the
//! extension of the last segment of the URL path (query and fragment ignored,
//! percent-escapes decoded), and a response by its `Content-Type` (media type only,
//! parameters ignored) or by the extension of the `filename`/`filename*` in its
//! `Content-Disposition`. Host names are never looked at, so an extension such as
//! `com` would only ever match a path, not the `.com` of a domain.
//!
//! Extensions and media types are stored lower-case; matching is case-insensitive.

use crate::window::WindowId;

/// One compiled file rule.
#[derive(Debug, Clone)]
pub(crate) struct FileRule {
    /// Stable rule id, `file:<role or group>:<name>`.
    pub rule: String,
    /// Rule name as written.
    pub name: String,
    /// Who the rule belongs to, for reasons: `pupils`, `the year6 group`.
    pub owner: String,
    /// Extensions without the dot, lower-case.
    pub extensions: Vec<String>,
    /// Media types (`application/x-msdownload`), lower-case.
    pub content_types: Vec<String>,
    /// Windows the rule is limited to; empty means always.
    pub windows: Vec<WindowId>,
}

impl FileRule {
    /// The extension (lower-case, as listed) that `path` ends with, if any.
    pub fn match_path(&self, path: &str) -> Option<&str> {
        let path = path.split(['?', '#']).next().unwrap_or(path);
        let last = path.rsplit('/').next().unwrap_or(path);
        if last.contains('%') {
            let decoded = percent_decode(last);
            self.match_file_name(&decoded)
        } else {
            self.match_file_name(last)
        }
    }

    /// The extension (lower-case, as listed) that file name `name` ends with, if any.
    pub fn match_file_name(&self, name: &str) -> Option<&str> {
        let name = name.trim_end_matches(['.', ' ', '"']);
        let (_, ext) = name.rsplit_once('.')?;
        self.extensions
            .iter()
            .find(|listed| listed.eq_ignore_ascii_case(ext))
            .map(String::as_str)
    }

    /// The listed media type that `content_type` is, if any.
    pub fn match_content_type(&self, content_type: &str) -> Option<&str> {
        let essence = content_type.split(';').next().unwrap_or("").trim();
        self.content_types
            .iter()
            .find(|listed| listed.eq_ignore_ascii_case(essence))
            .map(String::as_str)
    }

    /// The listed extension of the file name in a `Content-Disposition` value, if any.
    pub fn match_disposition(&self, disposition: &str) -> Option<&str> {
        disposition_file_names(disposition).find_map(|name| {
            if name.contains('%') {
                let decoded = percent_decode(name);
                self.match_file_name(&decoded)
            } else {
                self.match_file_name(name)
            }
        })
    }
}

/// The `filename=` and `filename*=` values of a `Content-Disposition` header, quotes
/// and the RFC 5987 `charset'lang'` prefix removed (still percent-encoded for `*`).
fn disposition_file_names(disposition: &str) -> impl Iterator<Item = &str> {
    disposition.split(';').filter_map(|param| {
        let (key, value) = param.split_once('=')?;
        let key = key.trim();
        let value = value.trim();
        if key.eq_ignore_ascii_case("filename") {
            Some(value.trim_matches('"'))
        } else if key.eq_ignore_ascii_case("filename*") {
            let value = value.trim_matches('"');
            Some(value.rsplit('\'').next().unwrap_or(value))
        } else {
            None
        }
    })
}

/// Decodes `%XX` escapes; invalid escapes and invalid UTF-8 are kept/replaced.
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push(h * 16 + l);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn hex(b: u8) -> Option<u8> {
    (b as char).to_digit(16).map(|d| d as u8)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn executables() -> FileRule {
        FileRule {
            rule: "file:pupil:executables".into(),
            name: "executables".into(),
            owner: "pupils".into(),
            extensions: vec!["exe".into(), "msi".into(), "ps1".into()],
            content_types: vec!["application/x-msdownload".into()],
            windows: vec![],
        }
    }

    #[test]
    fn path_extensions() {
        let r = executables();
        assert_eq!(r.match_path("/download/setup.exe"), Some("exe"));
        assert_eq!(r.match_path("/download/SETUP.EXE?x=1"), Some("exe"));
        assert_eq!(r.match_path("/download/setup%2Eexe"), Some("exe"));
        assert_eq!(r.match_path("/a.exe/readme.txt"), None);
        assert_eq!(r.match_path("/setup.exe.html"), None);
        assert_eq!(r.match_path("/page?file=setup.exe"), None);
        assert_eq!(r.match_path("/"), None);
        assert_eq!(r.match_path("/exe"), None);
    }

    #[test]
    fn response_headers() {
        let r = executables();
        assert_eq!(
            r.match_content_type("Application/X-MSDownload; charset=binary"),
            Some("application/x-msdownload")
        );
        assert_eq!(r.match_content_type("text/html"), None);
        assert_eq!(
            r.match_disposition("attachment; filename=\"tool.msi\""),
            Some("msi")
        );
        assert_eq!(
            r.match_disposition("attachment; filename*=UTF-8''run%2Eps1"),
            Some("ps1")
        );
        assert_eq!(r.match_disposition("inline"), None);
        assert_eq!(r.match_disposition("attachment; filename=notes.pdf"), None);
    }
}
