//! Host and URL normalisation: one canonical spelling for every way a browser (or a
//! pupil trying to get round the filter) can write the same host or path.
//!
//! Invariants of a [`Host`]: ASCII only, lower-case, no trailing dot, no port, no empty
//! label; internationalised names are in punycode (UTS-46 as in the WHATWG URL
//! standard, underscores allowed); IPv4 addresses written in any form a browser accepts
//! (`2130706433`, `0x7f.1`, `017700000001`) are dotted quads; IPv6 addresses have no
//! brackets and are in RFC 5952 compressed form.
//!
//! Invariants of a normalised path (the `path` of a [`RequestTarget`]): starts with `/`;
//! percent-encodings of unreserved characters (`A-Z a-z 0-9 - . _ ~`) are decoded, the
//! other percent-encodings use upper-case hex, bytes outside printable ASCII are
//! percent-encoded; `\` is read as `/` (as browsers do for http URLs), and so are the
//! encoded `%2F` and `%5C` in the path (not in the query), because origins decode them
//! before resolving dot segments (`/x%2F..%2Fsecret` is served as `/secret`); dot
//! segments (including encoded ones such as `%2e%2e`, in any mix with encoded
//! slashes) are then resolved; runs of `/` are collapsed; the fragment is removed. The
//! normalised path is what the filter decides on; the request goes to the origin as
//! the client wrote it. The case of the path is kept (paths are case-sensitive on
//! the wire); the index compares URL entries case-insensitively, see
//! [`crate::index`].

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

/// Why a host or URL could not be normalised.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NormaliseError {
    /// The host (or the URL's host part) is empty.
    #[error("empty host")]
    EmptyHost,
    /// The host has an empty label (`a..b`, `.a`).
    #[error("host `{0}` has an empty label")]
    EmptyLabel(String),
    /// The host contains a character that may not appear in a host name.
    #[error("host `{host}` contains the forbidden character {ch:?}")]
    ForbiddenCharacter {
        /// The host as given.
        host: String,
        /// The offending character.
        ch: char,
    },
    /// The internationalised host name is not valid under UTS-46.
    #[error("host `{0}` is not a valid internationalised domain name")]
    Idna(String),
    /// The host ends in a number, so it must be an IPv4 address, but it is not a valid one.
    #[error("host `{0}` ends in a number but is not a valid IPv4 address")]
    Ipv4(String),
    /// The host is bracketed or contains `:` but is not a valid IPv6 address.
    #[error("host `{0}` is not a valid IPv6 address")]
    Ipv6(String),
    /// The port after the host is not a number from 0 to 65535.
    #[error("invalid port in `{0}`")]
    Port(String),
}

/// A normalised host name or IP address (see the module documentation for the invariants).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Host(String);

impl Host {
    /// Normalises a host as it appears in a request, a `Host:` header, SNI or a list:
    /// an optional `:port` (and IPv6 `[...]` brackets) is removed, then see the module
    /// documentation.
    pub fn parse(raw: &str) -> Result<Host, NormaliseError> {
        let raw = raw.trim();
        if let Some(rest) = raw.strip_prefix('[') {
            let Some((inside, after)) = rest.split_once(']') else {
                return Err(NormaliseError::Ipv6(raw.to_string()));
            };
            if !after.is_empty() {
                let port = after
                    .strip_prefix(':')
                    .ok_or_else(|| NormaliseError::Ipv6(raw.to_string()))?;
                check_port(port, raw)?;
            }
            return parse_ipv6(inside, raw);
        }
        let host = match raw.bytes().filter(|&b| b == b':').count() {
            0 => raw,
            1 => {
                let (host, port) = raw.split_once(':').unwrap_or((raw, ""));
                check_port(port, raw)?;
                host
            }
            // Two or more colons without brackets: a bare IPv6 address.
            _ => return parse_ipv6(raw, raw),
        };
        parse_domain_or_ipv4(host).map(Host)
    }

    /// The normalised host text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether the host is an IPv4 or IPv6 address (which match only literally).
    pub fn is_ip(&self) -> bool {
        self.0.contains(':') || self.0.parse::<Ipv4Addr>().is_ok()
    }

    /// The host, consuming `self`.
    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Host {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl AsRef<str> for Host {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl std::str::FromStr for Host {
    type Err = NormaliseError;
    fn from_str(s: &str) -> Result<Host, NormaliseError> {
        Host::parse(s)
    }
}

fn check_port(port: &str, raw: &str) -> Result<(), NormaliseError> {
    // An empty port (`host:`) is allowed by the URL standard and means the default.
    if port.is_empty() || (port.len() <= 5 && port.parse::<u16>().is_ok()) {
        Ok(())
    } else {
        Err(NormaliseError::Port(raw.to_string()))
    }
}

fn parse_ipv6(text: &str, raw: &str) -> Result<Host, NormaliseError> {
    // Zone identifiers (`fe80::1%eth0`) never reach a proxy as a destination; refuse them.
    text.parse::<Ipv6Addr>()
        .map(|a| Host(a.to_string()))
        .map_err(|_| NormaliseError::Ipv6(raw.to_string()))
}

/// Bytes allowed in a normalised host name label (after lower-casing).
#[inline]
fn is_host_byte(b: u8) -> bool {
    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
}

fn parse_domain_or_ipv4(host: &str) -> Result<String, NormaliseError> {
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err(NormaliseError::EmptyHost);
    }
    // Fast path: plain ASCII names (every list entry and nearly every request).
    let simple = host
        .bytes()
        .all(|b| is_host_byte(b.to_ascii_lowercase()) || b == b'.');
    let mut name = if simple && !has_punycode_label(host) {
        host.to_ascii_lowercase()
    } else {
        let decoded = if host.contains('%') {
            // The URL standard percent-decodes hosts before IDNA processing.
            String::from_utf8_lossy(&percent_decode_all(host.as_bytes())).into_owned()
        } else {
            host.to_string()
        };
        let ascii = idna::domain_to_ascii_cow(decoded.as_bytes(), idna::AsciiDenyList::URL)
            .map_err(|_| NormaliseError::Idna(host.to_string()))?
            .into_owned();
        let ascii = ascii.strip_suffix('.').map(str::to_string).unwrap_or(ascii);
        if let Some(ch) = ascii
            .chars()
            .find(|&c| !(c.is_ascii() && (is_host_byte(c as u8) || c == '.')))
        {
            return Err(NormaliseError::ForbiddenCharacter {
                host: host.to_string(),
                ch,
            });
        }
        ascii
    };
    if name.is_empty() {
        return Err(NormaliseError::EmptyHost);
    }
    if name.split('.').any(str::is_empty) {
        return Err(NormaliseError::EmptyLabel(host.to_string()));
    }
    let last = name.rsplit('.').next().unwrap_or("");
    // A dotted-decimal address as std reads it (four numbers 0-255, no leading zeros)
    // is already in canonical form: no second parse and no formatting.
    if ends_in_number(last) && name.parse::<std::net::Ipv4Addr>().is_err() {
        let addr =
            parse_whatwg_ipv4(&name).ok_or_else(|| NormaliseError::Ipv4(host.to_string()))?;
        name = addr.to_string();
    }
    Ok(name)
}

fn has_punycode_label(host: &str) -> bool {
    host.split('.')
        .any(|l| l.len() >= 4 && l[..4].eq_ignore_ascii_case("xn--"))
}

/// The WHATWG "ends in a number" check for the last label.
fn ends_in_number(label: &str) -> bool {
    if !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()) {
        return true;
    }
    match label.strip_prefix("0x") {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => false,
    }
}

/// WHATWG IPv4 parser: 1 to 4 parts, each decimal, octal (leading `0`) or hex (`0x`);
/// the last part fills the remaining bytes.
fn parse_whatwg_ipv4(name: &str) -> Option<Ipv4Addr> {
    let parts: Vec<&str> = name.split('.').collect();
    if parts.len() > 4 {
        return None;
    }
    let mut numbers = [0u64; 4];
    for (i, part) in parts.iter().enumerate() {
        numbers[i] = parse_ipv4_number(part)?;
    }
    let n = parts.len();
    if numbers[..n - 1].iter().any(|&x| x > 255) {
        return None;
    }
    let last = numbers[n - 1];
    if last >= 256u64.pow(5 - n as u32) {
        return None;
    }
    let mut value = last;
    for (i, &x) in numbers[..n - 1].iter().enumerate() {
        value += x << (8 * (3 - i));
    }
    u32::try_from(value).ok().map(Ipv4Addr::from)
}

fn parse_ipv4_number(part: &str) -> Option<u64> {
    if part.is_empty() {
        return None;
    }
    let (digits, radix) = if let Some(hex) = part.strip_prefix("0x") {
        (hex, 16)
    } else if part.len() > 1 && part.starts_with('0') {
        (&part[1..], 8)
    } else {
        (part, 10)
    };
    if digits.is_empty() {
        return Some(0);
    }
    // Longer than any valid part: refuse before overflowing.
    if digits.len() > 12 {
        return None;
    }
    u64::from_str_radix(digits, radix).ok()
}

/// A request as the filter sees it: the normalised host and, when visible, the
/// normalised path and query (`None` for a CONNECT tunnel or an SNI-only decision).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestTarget {
    /// The normalised host.
    pub host: Host,
    /// The normalised path and query (`/a/b?x=1`), or `None` when only the host is known.
    pub path: Option<String>,
}

impl RequestTarget {
    /// Parses `http://user@Host:80/p?q#frag`, `//host/p` or `host/path` (no scheme).
    /// A URL with an authority but no path gets the path `/`.
    pub fn parse_url(url: &str) -> Result<RequestTarget, NormaliseError> {
        let url = url.trim();
        let rest = match url.find("://") {
            Some(i)
                if i > 0
                    && url[..i].bytes().all(|b| {
                        b.is_ascii_alphanumeric() || b == b'+' || b == b'-' || b == b'.'
                    }) =>
            {
                &url[i + 3..]
            }
            _ => url.strip_prefix("//").unwrap_or(url),
        };
        let end = rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len());
        let authority = &rest[..end];
        let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
        let host = Host::parse(host_port)?;
        let path = normalise_path(&rest[end..]);
        Ok(RequestTarget {
            host,
            path: Some(path),
        })
    }

    /// Builds a target from a host (with optional port) and an optional origin-form
    /// request target (`/path?query`).
    pub fn from_parts(
        host: &str,
        path_and_query: Option<&str>,
    ) -> Result<RequestTarget, NormaliseError> {
        Ok(RequestTarget {
            host: Host::parse(host)?,
            path: path_and_query.map(normalise_path),
        })
    }

    /// A target that is only a host (CONNECT, SNI).
    pub fn host_only(host: Host) -> RequestTarget {
        RequestTarget { host, path: None }
    }

    /// `host/path?query` without scheme: the text that URL entries and expressions are
    /// matched against. Just the host when there is no path.
    pub fn url_text(&self) -> String {
        let path = self.path.as_deref().unwrap_or("");
        let mut s = String::with_capacity(self.host.0.len() + path.len());
        s.push_str(&self.host.0);
        s.push_str(path);
        s
    }
}

impl fmt::Display for RequestTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.host.0)?;
        if let Some(p) = &self.path {
            f.write_str(p)?;
        }
        Ok(())
    }
}

fn hex_value(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode_all(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex_value(s[i + 1]), hex_value(s[i + 2]))
        {
            out.push(h << 4 | l);
            i += 3;
            continue;
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Canonical percent-encoding of one path or query component (see module docs).
fn normalise_encoding(input: &str, out: &mut String, in_path: bool) {
    let s = input.as_bytes();
    let mut i = 0;
    while i < s.len() {
        let b = s[i];
        if b == b'%'
            && i + 2 < s.len()
            && let (Some(h), Some(l)) = (hex_value(s[i + 1]), hex_value(s[i + 2]))
        {
            let v = h << 4 | l;
            if in_path && (v == b'/' || v == b'\\') {
                // Origins decode `%2F` (and `%5C`) before resolving dot segments, so
                // `/x%2F..%2Fsecret` is served as `/secret`: decide on that.
                out.push('/');
            } else if is_unreserved(v) {
                out.push(v as char);
            } else {
                out.push('%');
                out.push(HEX[(v >> 4) as usize] as char);
                out.push(HEX[(v & 15) as usize] as char);
            }
            i += 3;
            continue;
        }
        if b == b'\\' && in_path {
            out.push('/');
        } else if b <= b' ' || b >= 0x7f {
            out.push('%');
            out.push(HEX[(b >> 4) as usize] as char);
            out.push(HEX[(b & 15) as usize] as char);
        } else {
            out.push(b as char);
        }
        i += 1;
    }
}

/// Normalises a path with optional query (and fragment, which is removed); see the
/// module documentation. The result always starts with `/`.
pub fn normalise_path(raw: &str) -> String {
    let raw = raw.split('#').next().unwrap_or("");
    let (path, query) = match raw.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (raw, None),
    };
    let mut decoded = String::with_capacity(path.len() + 1);
    normalise_encoding(path, &mut decoded, true);
    let mut out = String::with_capacity(raw.len() + 1);
    // Resolve dot segments and collapse empty segments.
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing_slash = false;
    for seg in decoded.split('/') {
        match seg {
            "" => trailing_slash = true,
            "." => trailing_slash = true,
            ".." => {
                segments.pop();
                trailing_slash = true;
            }
            s => {
                segments.push(s);
                trailing_slash = false;
            }
        }
    }
    for seg in &segments {
        out.push('/');
        out.push_str(seg);
    }
    if trailing_slash || segments.is_empty() {
        out.push('/');
    }
    if let Some(q) = query {
        out.push('?');
        normalise_encoding(q, &mut out, false);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> String {
        Host::parse(s)
            .map(Host::into_string)
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    fn url(s: &str) -> String {
        RequestTarget::parse_url(s)
            .map(|t| t.url_text())
            .unwrap_or_else(|e| format!("ERR {e}"))
    }

    #[test]
    fn host_case_trailing_dot_port() {
        assert_eq!(h("WWW.Example.COM"), "www.example.com");
        assert_eq!(h("example.com."), "example.com");
        assert_eq!(h("Example.com.:8080"), "example.com");
        assert_eq!(h("example.com:"), "example.com");
        assert_eq!(h("  example.com  "), "example.com");
        assert_eq!(h("under_score.tripod.com"), "under_score.tripod.com");
        assert!(h("example.com:99999").starts_with("ERR"));
        assert!(h("example.com:8a").starts_with("ERR"));
        assert!(h("").starts_with("ERR"));
        assert!(h(".").starts_with("ERR"));
        assert!(h("a..b").starts_with("ERR"));
        assert!(h("exa mple.com").starts_with("ERR"));
        assert!(h("a/b").starts_with("ERR"));
        assert!(h("*.example.com").starts_with("ERR"));
    }

    #[test]
    fn host_idn() {
        assert_eq!(h("BÜCHER.de"), "xn--bcher-kva.de");
        assert_eq!(h("bücher.de."), "xn--bcher-kva.de");
        assert_eq!(h("XN--BCHER-KVA.de"), "xn--bcher-kva.de");
        // Full-width dot and letters map to ASCII under UTS-46.
        assert_eq!(h("ｅｘａｍｐｌｅ。com"), "example.com");
        assert_eq!(h("b%C3%BCcher.de"), "xn--bcher-kva.de");
        assert!(h("xn--zz.de").starts_with("ERR"), "{}", h("xn--zz.de"));
    }

    #[test]
    fn host_ipv4_forms() {
        assert_eq!(h("127.0.0.1"), "127.0.0.1");
        assert_eq!(h("2130706433"), "127.0.0.1");
        assert_eq!(h("0x7f.1"), "127.0.0.1");
        assert_eq!(h("0x7F.1"), "127.0.0.1");
        assert_eq!(h("017700000001"), "127.0.0.1");
        assert_eq!(h("0177.0.0.01"), "127.0.0.1");
        assert_eq!(h("127.1"), "127.0.0.1");
        assert_eq!(h("127.0.1"), "127.0.0.1");
        assert_eq!(h("0x7f000001:8080"), "127.0.0.1");
        assert_eq!(h("192.168.0.1."), "192.168.0.1");
        assert!(h("256.0.0.1").starts_with("ERR"));
        assert!(h("1.2.3.4.5").starts_with("ERR"));
        assert!(h("example.123").starts_with("ERR"));
        assert!(h("08.1.1.1").starts_with("ERR"), "8 is not an octal digit");
        assert!(Host::parse("10.0.0.1").map(|x| x.is_ip()).unwrap_or(false));
        assert!(
            !Host::parse("example.com")
                .map(|x| x.is_ip())
                .unwrap_or(true)
        );
        // Names that merely contain numbers are names.
        assert_eq!(h("1.2.3.example"), "1.2.3.example");
        assert_eq!(h("123abc.com"), "123abc.com");
    }

    #[test]
    fn host_ipv6() {
        assert_eq!(h("[2001:DB8::1]"), "2001:db8::1");
        assert_eq!(h("[2001:db8:0:0:0:0:0:1]:443"), "2001:db8::1");
        assert_eq!(h("2001:0db8::0001"), "2001:db8::1");
        assert_eq!(h("[::1]"), "::1");
        assert!(Host::parse("[::1]").map(|x| x.is_ip()).unwrap_or(false));
        assert!(h("[::1").starts_with("ERR"));
        assert!(h("[::1]x").starts_with("ERR"));
        assert!(h("[::1]:99999").starts_with("ERR"));
        assert!(h("[nothex::1]").starts_with("ERR"));
    }

    #[test]
    fn url_parsing() {
        assert_eq!(url("http://Host.Example:80/p?q=1"), "host.example/p?q=1");
        assert_eq!(url("https://user:pw@example.com/x#frag"), "example.com/x");
        assert_eq!(url("http://example.com"), "example.com/");
        assert_eq!(url("example.com/a/b"), "example.com/a/b");
        assert_eq!(url("//example.com/a"), "example.com/a");
        assert_eq!(url("http://2130706433/"), "127.0.0.1/");
        assert_eq!(url("http://[::1]:8080/x"), "::1/x");
        assert_eq!(url("http://example.com\\a\\b"), "example.com/a/b");
        assert_eq!(url("http://example.com?x=1"), "example.com/?x=1");
        assert!(url("http:///path").starts_with("ERR"));
    }

    #[test]
    fn path_percent_encoding() {
        assert_eq!(normalise_path("/%70orn"), "/porn");
        assert_eq!(normalise_path("/%50%4F%52%4E"), "/PORN");
        // Encoded slashes are slashes (see `path_encoded_slashes_are_slashes`).
        assert_eq!(normalise_path("/a%2fb"), "/a/b");
        assert_eq!(normalise_path("/a%2Fb"), "/a/b");
        assert_eq!(normalise_path("/%7e%5F%2D"), "/~_-");
        assert_eq!(normalise_path("/bad%zz%4"), "/bad%zz%4");
        assert_eq!(normalise_path("/caf\u{e9}"), "/caf%C3%A9");
        assert_eq!(normalise_path("/a b"), "/a%20b");
        assert_eq!(normalise_path("/p?q=%70%3d"), "/p?q=p%3D");
        // Query keeps its slashes and dots.
        assert_eq!(normalise_path("/p?u=a//b/../c"), "/p?u=a//b/../c");
    }

    #[test]
    fn path_dot_segments_and_slashes() {
        assert_eq!(normalise_path(""), "/");
        assert_eq!(normalise_path("/"), "/");
        assert_eq!(normalise_path("/a/./b/../c"), "/a/c");
        assert_eq!(normalise_path("/a/b/.."), "/a/");
        assert_eq!(normalise_path("/a/b/."), "/a/b/");
        assert_eq!(normalise_path("/../../x"), "/x");
        assert_eq!(normalise_path("/ok/%2e%2e/porn"), "/porn");
        assert_eq!(normalise_path("/ok/%2E/porn"), "/ok/porn");
        assert_eq!(normalise_path("//a///b//"), "/a/b/");
        assert_eq!(normalise_path("/a/b#frag"), "/a/b");
        assert_eq!(normalise_path("/a..b/c"), "/a..b/c");
        assert_eq!(normalise_path("/A/B"), "/A/B", "case is kept");
    }

    #[test]
    fn path_encoded_slashes_are_slashes() {
        // What the origin serves: it decodes `%2F` (and `%5C`, a backslash) to a slash
        // and then resolves the dot segments, so the filter must decide on that path.
        assert_eq!(normalise_path("/x%2f..%2fsecret"), "/secret");
        assert_eq!(normalise_path("/x%2F..%2Fsecret"), "/secret");
        assert_eq!(normalise_path("/x%5c..%5csecret"), "/secret");
        assert_eq!(normalise_path("/x%5C..%5Csecret"), "/secret");
        assert_eq!(normalise_path("/x%2f%2e%2e%2fsecret"), "/secret");
        assert_eq!(normalise_path("/x%2F%2E%2E%5Csecret"), "/secret");
        assert_eq!(normalise_path("/x/..%2fsecret"), "/secret");
        assert_eq!(normalise_path("/x%2f../secret"), "/secret");
        assert_eq!(normalise_path("/x\\..%2Fsecret"), "/secret");
        assert_eq!(normalise_path("/x%2f.%2e%5csecret"), "/secret");
        assert_eq!(normalise_path("/a/b%2F%2E%2E%2F%2E%2E%2Fsecret"), "/secret");
        assert_eq!(normalise_path("/x%2f..%2fgames/"), "/games/");
        assert_eq!(normalise_path("/secret%2Fpage"), "/secret/page");
        assert_eq!(normalise_path("/a%2F%2Fb%2F"), "/a/b/");
        // Not a slash: a double-encoded one is decoded once by the origin, to `%2F`.
        assert_eq!(
            normalise_path("/x%252f..%252fsecret"),
            "/x%252f..%252fsecret"
        );
        // The query keeps its encoded slashes.
        assert_eq!(normalise_path("/p?u=a%2F..%2Fb"), "/p?u=a%2F..%2Fb");
        let t = RequestTarget::from_parts("allowed.test", Some("/x%2f..%2fsecret?q=1"))
            .map(|t| t.url_text());
        assert_eq!(t, Ok("allowed.test/secret?q=1".to_string()));
        assert_eq!(
            url("http://example.org/x%2f..%2fgames/"),
            "example.org/games/"
        );
    }

    #[test]
    fn from_parts_and_url_text() {
        let t = RequestTarget::from_parts("Example.com:443", None).map(|t| t.url_text());
        assert_eq!(t, Ok("example.com".to_string()));
        let t = RequestTarget::from_parts("example.com", Some("/a//b/%2e%2e/c?x=%41"))
            .map(|t| t.url_text());
        assert_eq!(t, Ok("example.com/a/c?x=A".to_string()));
    }
}
