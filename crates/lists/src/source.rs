//! List formats: UT1 category folders (as imported by squidGuard, ufdbGuard and
//! e2guardian), hosts files and plain domain lists, read into normalised [`Entries`].
//!
//! Reading never fails because of one bad line: such lines are collected in
//! [`Entries::skipped`] with file, line number and reason, so that an operator sees them
//! and the rest of the list still protects. Only I/O errors (naming the file) and a path
//! that is not a list at all are errors. Whether the list as a whole is fit to go live
//! (not binary, not mostly invalid, not cut short) is [`crate::screen`](mod@crate::screen)'s question.
//!
//! UT1 ships some categories as symbolic links (`porn -> adult`). A real symbolic link is
//! followed by the file system; a checkout without symlink support stores the link as a
//! small file whose content is the target name, and [`resolve_ut1_dir`] follows that too.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};

use crate::ListId;
use crate::normalise::{Host, RequestTarget};

/// Errors from reading lists or building the index.
#[derive(Debug, thiserror::Error)]
pub enum ListError {
    /// A list file or folder could not be read.
    #[error("cannot read {}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The path exists but is not a list of the requested format.
    #[error("{} is not a list: {reason}", path.display())]
    NotAList {
        /// The file or folder.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// An expression is not a valid regular expression.
    #[error("list {list}: invalid expression `{expression}`: {reason}")]
    Expression {
        /// The list the expression was added to.
        list: ListId,
        /// The expression as added.
        expression: String,
        /// The regex compiler's message.
        reason: String,
    },
    /// The expressions are valid one by one but too large to compile together.
    #[error("the expressions are too large to compile together: {0}")]
    ExpressionsTooLarge(String),
}

/// The formats that [`read`] understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ListFormat {
    /// A UT1 category folder with optional `domains`, `urls` and `expressions` files
    /// (`very_restrictive_expression` only through [`read_ut1`]).
    Ut1,
    /// A hosts file: `0.0.0.0 host [host ...]`, `#` comments; localhost names skipped.
    Hosts,
    /// One domain per line, `#` comments; a leading `*.` or `.` is accepted and ignored.
    Domains,
}

/// Options for reading a UT1 category folder.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Ut1Options {
    /// Also read `very_restrictive_expression` (UT1 marks these as prone to false positives).
    pub very_restrictive: bool,
}

/// A line that was not taken into a list, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SkippedLine {
    /// The file.
    pub path: PathBuf,
    /// 1-based line number.
    pub line: usize,
    /// Why the line was skipped.
    pub reason: String,
}

/// The normalised content of one list.
#[derive(Debug, Clone, Default)]
pub struct Entries {
    /// Domain (or IP address) entries: match the host and every subdomain.
    pub domains: Vec<Host>,
    /// Domain entries handed to [`read_streaming`]'s callback instead of kept in
    /// `domains` (counted, so that [`Entries::len`] and screening see them).
    pub streamed_domains: usize,
    /// URL entries: host (and subdomains) plus normalised path prefix (case kept).
    pub urls: Vec<(Host, String)>,
    /// Regular expressions over [`RequestTarget::url_text`], in `regex` crate syntax
    /// (UT1's POSIX EREs are translated by [`translate_ere`]).
    pub expressions: Vec<String>,
    /// Lines that were not taken, with the reason.
    pub skipped: Vec<SkippedLine>,
    /// Set when a file read holds bytes that no text list has (NUL or other control
    /// bytes): what was found, in words. [`crate::screen`](mod@crate::screen) refuses such a list.
    pub binary: Option<String>,
}

impl Entries {
    /// Number of entries (domains, URLs and expressions; skipped lines not counted).
    pub fn len(&self) -> usize {
        self.domain_count() + self.urls.len() + self.expressions.len()
    }

    /// Number of domain entries, kept or streamed.
    pub fn domain_count(&self) -> usize {
        self.domains.len() + self.streamed_domains
    }

    /// Whether there are no entries.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Appends the entries (and skipped lines) of `other`.
    pub fn extend(&mut self, other: Entries) {
        self.domains.extend(other.domains);
        self.streamed_domains += other.streamed_domains;
        self.urls.extend(other.urls);
        self.expressions.extend(other.expressions);
        self.skipped.extend(other.skipped);
        if self.binary.is_none() {
            self.binary = other.binary;
        }
    }
}

/// Where the domains read go: kept in [`Entries::domains`], or handed to a callback.
enum DomainSink<'a> {
    Keep,
    Stream(&'a mut dyn FnMut(&Host)),
}

impl DomainSink<'_> {
    fn push(&mut self, entries: &mut Entries, host: Host) {
        match self {
            DomainSink::Keep => entries.domains.push(host),
            DomainSink::Stream(f) => {
                f(&host);
                entries.streamed_domains += 1;
            }
        }
    }
}

/// Reads a list of the given format. See the module documentation for error handling.
pub fn read(format: ListFormat, path: &Path) -> Result<Entries, ListError> {
    read_into(format, path, DomainSink::Keep)
}

/// Reads a list like [`read`], but hands every domain entry to `on_domain` instead of
/// keeping it: [`Entries::domains`] stays empty and [`Entries::streamed_domains`]
/// counts them. Domain and hosts files are read a line at a time, so a list of
/// millions of domains costs only what the callback keeps (the policy compile keeps
/// an 8-byte fingerprint each, not a `Host` of ~56 bytes plus the file's text).
pub fn read_streaming(
    format: ListFormat,
    path: &Path,
    on_domain: &mut dyn FnMut(&Host),
) -> Result<Entries, ListError> {
    read_into(format, path, DomainSink::Stream(on_domain))
}

fn read_into(format: ListFormat, path: &Path, mut sink: DomainSink) -> Result<Entries, ListError> {
    let mut entries = Entries::default();
    match format {
        ListFormat::Ut1 => return read_ut1_into(path, Ut1Options::default(), &mut sink),
        ListFormat::Hosts => read_lines(path, &mut entries, |entries, n, line| {
            hosts_line(n, line, path, entries, &mut sink);
        })?,
        ListFormat::Domains => read_lines(path, &mut entries, |entries, n, line| {
            domain_line(n, line, path, entries, &mut sink);
        })?,
    }
    Ok(entries)
}

/// Reads a UT1 category folder (following UT1's symbolic links, see the module docs).
/// A folder with none of the list files is an error; each missing file is not.
pub fn read_ut1(path: &Path, options: Ut1Options) -> Result<Entries, ListError> {
    read_ut1_into(path, options, &mut DomainSink::Keep)
}

fn read_ut1_into(
    path: &Path,
    options: Ut1Options,
    sink: &mut DomainSink,
) -> Result<Entries, ListError> {
    let dir = resolve_ut1_dir(path)?;
    let mut entries = Entries::default();
    let mut found = false;
    let mut expression_files = vec!["expressions"];
    if options.very_restrictive {
        expression_files.push("very_restrictive_expression");
    }
    for name in ["domains", "urls"].into_iter().chain(expression_files) {
        let file = dir.join(name);
        if name == "domains" {
            let read = read_lines(&file, &mut entries, |entries, n, line| {
                domain_line(n, line, &file, entries, sink);
            });
            match read {
                Ok(()) => found = true,
                Err(ListError::Io { source, .. })
                    if source.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            continue;
        }
        let text = match fs::read(&file) {
            Ok(bytes) => bytes_to_text(bytes, &file, &mut entries),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ListError::Io { path: file, source }),
        };
        found = true;
        match name {
            "urls" => parse_urls(&text, &file, &mut entries),
            _ => parse_expressions(&text, &file, &mut entries),
        }
    }
    if !found {
        return Err(ListError::NotAList {
            path: path.to_path_buf(),
            reason: "a UT1 category folder needs at least one of `domains`, `urls`, `expressions`"
                .into(),
        });
    }
    Ok(entries)
}

/// The folder a UT1 category path stands for: the path itself if it is a folder (real
/// symbolic links are followed by the file system), or, if it is a small file holding a
/// sibling's name (a symbolic link checked out as a file), that sibling folder.
pub fn resolve_ut1_dir(path: &Path) -> Result<PathBuf, ListError> {
    let mut current = path.to_path_buf();
    for _ in 0..8 {
        let meta = fs::metadata(&current).map_err(|source| ListError::Io {
            path: current.clone(),
            source,
        })?;
        if meta.is_dir() {
            return Ok(current);
        }
        if meta.len() > 256 {
            break;
        }
        let target = fs::read_to_string(&current).map_err(|source| ListError::Io {
            path: current.clone(),
            source,
        })?;
        let target = target.trim();
        if target.is_empty() || target.contains('\n') {
            break;
        }
        current = match current.parent() {
            Some(parent) => parent.join(target),
            None => PathBuf::from(target),
        };
    }
    Err(ListError::NotAList {
        path: path.to_path_buf(),
        reason: "not a UT1 category folder (nor a link to one)".into(),
    })
}

/// Reads `path` a line at a time, handing `each` the non-empty, comment-stripped,
/// trimmed lines with their 1-based numbers (as [`content_lines`] does for a whole
/// text); binary bytes and stray non-UTF-8 bytes are treated as [`bytes_to_text`] does.
fn read_lines(
    path: &Path,
    entries: &mut Entries,
    mut each: impl FnMut(&mut Entries, usize, &str),
) -> Result<(), ListError> {
    let io = |source| ListError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut reader = BufReader::with_capacity(1 << 16, fs::File::open(path).map_err(io)?);
    let mut buf = Vec::new();
    let (mut number, mut offset) = (0usize, 0usize);
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf).map_err(io)? == 0 {
            return Ok(());
        }
        number += 1;
        if entries.binary.is_none()
            && let Some(at) = buf.iter().position(|&b| is_binary_byte(b))
        {
            entries.binary = Some(format!(
                "{} holds binary data (byte 0x{:02x} at offset {}), not a text list",
                path.display(),
                buf[at],
                offset + at
            ));
        }
        offset += buf.len();
        let line = String::from_utf8_lossy(&buf);
        if let Some(line) = content(&line) {
            each(entries, number, line);
        }
    }
}

/// Lists are meant to be UTF-8; a stray Latin-1 byte must not lose the whole file (its
/// line is skipped). Bytes that no text list holds (NUL, other control characters)
/// mark the list as binary in [`Entries::binary`].
fn bytes_to_text(bytes: Vec<u8>, path: &Path, entries: &mut Entries) -> String {
    if entries.binary.is_none()
        && let Some(offset) = bytes.iter().position(|&b| is_binary_byte(b))
    {
        entries.binary = Some(format!(
            "{} holds binary data (byte 0x{:02x} at offset {offset}), not a text list",
            path.display(),
            bytes[offset]
        ));
    }
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => String::from_utf8_lossy(e.as_bytes()).into_owned(),
    }
}

/// Control bytes that text lists never hold: all below 0x20 except tab, line feed,
/// vertical tab, form feed, carriage return and the old DOS end-of-file mark, and DEL.
fn is_binary_byte(b: u8) -> bool {
    (b < 0x20 && !matches!(b, b'\t' | b'\n' | 0x0b | 0x0c | b'\r' | 0x1a)) || b == 0x7f
}

/// Non-empty, comment-stripped, trimmed lines with 1-based numbers.
fn content_lines(text: &str) -> impl Iterator<Item = (usize, &str)> {
    text.lines()
        .enumerate()
        .filter_map(|(i, line)| content(line).map(|line| (i + 1, line)))
}

/// A line without its comment and surrounding blanks; `None` when nothing is left.
fn content(line: &str) -> Option<&str> {
    let line = match line.find('#') {
        Some(j) => &line[..j],
        None => line,
    };
    let line = line.trim();
    (!line.is_empty()).then_some(line)
}

fn skip(entries: &mut Entries, path: &Path, line: usize, reason: String) {
    entries.skipped.push(SkippedLine {
        path: path.to_path_buf(),
        line,
        reason,
    });
}

/// Parses a plain domain list (also UT1 `domains`) into `entries`.
pub fn parse_domains(text: &str, path: &Path, entries: &mut Entries) {
    for (n, line) in content_lines(text) {
        domain_line(n, line, path, entries, &mut DomainSink::Keep);
    }
}

/// One content line `n` of a domain list.
fn domain_line(n: usize, line: &str, path: &Path, entries: &mut Entries, sink: &mut DomainSink) {
    let name = line
        .strip_prefix("*.")
        .or_else(|| line.strip_prefix('.'))
        .unwrap_or(line);
    if name.contains(char::is_whitespace) {
        skip(entries, path, n, format!("more than one word: `{line}`"));
        return;
    }
    match Host::parse(name) {
        Ok(host) => sink.push(entries, host),
        Err(e) => skip(entries, path, n, e.to_string()),
    }
}

/// Host names that hosts files map to themselves; never entries.
const HOSTS_FILE_LOCAL_NAMES: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
    "0.0.0.0",
];

/// Parses a hosts file (`address host [host ...]`) into `entries`.
pub fn parse_hosts(text: &str, path: &Path, entries: &mut Entries) {
    for (n, line) in content_lines(text) {
        hosts_line(n, line, path, entries, &mut DomainSink::Keep);
    }
}

/// One content line `n` of a hosts file.
fn hosts_line(n: usize, line: &str, path: &Path, entries: &mut Entries, sink: &mut DomainSink) {
    let mut words = line.split_whitespace();
    let address = words.next().unwrap_or("");
    if address.parse::<std::net::IpAddr>().is_err() {
        skip(
            entries,
            path,
            n,
            format!("`{address}` is not an IP address (expected `0.0.0.0 host`)"),
        );
        return;
    }
    let mut any = false;
    for word in words {
        any = true;
        if HOSTS_FILE_LOCAL_NAMES.contains(&word) {
            continue;
        }
        match Host::parse(word) {
            Ok(host) => sink.push(entries, host),
            Err(e) => skip(entries, path, n, e.to_string()),
        }
    }
    if !any {
        skip(entries, path, n, "an address without a host name".into());
    }
}

/// Parses UT1 `urls` lines (`host/path`, no scheme) into `entries`.
pub fn parse_urls(text: &str, path: &Path, entries: &mut Entries) {
    for (n, line) in content_lines(text) {
        match RequestTarget::parse_url(line) {
            Ok(t) => {
                let p = t.path.unwrap_or_else(|| "/".to_string());
                entries.urls.push((t.host, p));
            }
            Err(e) => skip(entries, path, n, e.to_string()),
        }
    }
}

/// Parses UT1 expression lines (POSIX extended regular expressions) into `entries`,
/// translating them with [`translate_ere`] (falling back to the line as written if only
/// that compiles); an expression that compiles neither way is skipped with the
/// compiler's message.
pub fn parse_expressions(text: &str, path: &Path, entries: &mut Entries) {
    // Expressions may contain `#`, so no comment stripping here beyond whole lines.
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let translated = translate_ere(line);
        match check_expression(&translated) {
            Ok(()) => entries.expressions.push(translated),
            Err(first) => match check_expression(line) {
                Ok(()) => entries.expressions.push(line.to_string()),
                Err(_) => skip(entries, path, i + 1, first),
            },
        }
    }
}

/// Builds one expression with the options the index uses (ASCII, case-insensitive).
pub(crate) fn expression_builder(expression: &str) -> regex::bytes::RegexBuilder {
    let mut b = regex::bytes::RegexBuilder::new(expression);
    b.case_insensitive(true).unicode(false);
    b
}

/// Checks that an expression compiles as the index will compile it.
pub fn check_expression(expression: &str) -> Result<(), String> {
    expression_builder(expression)
        .build()
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// Translates a POSIX extended regular expression to `regex` crate syntax where the two
/// differ: inside a bracket expression `\`, `[` (outside `[:class:]`) and the set
/// operators `&&`, `--`, `~~` are literal in POSIX; a `{` that does not start a bound
/// is literal in POSIX.
pub fn translate_ere(ere: &str) -> String {
    let chars: Vec<char> = ere.chars().collect();
    let mut out = String::with_capacity(ere.len() + 8);
    let mut in_bound = false;
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        match c {
            '\\' => {
                out.push('\\');
                if let Some(&next) = chars.get(i + 1) {
                    out.push(next);
                    i += 1;
                } else {
                    out.push('\\');
                }
            }
            '[' => {
                out.push('[');
                i += 1;
                if chars.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if chars.get(i) == Some(&']') {
                    out.push_str("\\]");
                    i += 1;
                }
                while i < chars.len() && chars[i] != ']' {
                    let d = chars[i];
                    if d == '[' && matches!(chars.get(i + 1), Some(':' | '.' | '=')) {
                        // Copy a `[:class:]` (or collating element) verbatim.
                        let close = chars.get(i + 1).copied().unwrap_or(':');
                        out.push('[');
                        out.push(close);
                        i += 2;
                        while i < chars.len()
                            && !(chars[i] == close && chars.get(i + 1) == Some(&']'))
                        {
                            out.push(chars[i]);
                            i += 1;
                        }
                        if i < chars.len() {
                            out.push(close);
                            out.push(']');
                            i += 2;
                        }
                        continue;
                    }
                    if matches!(d, '\\' | '[' | '&' | '~')
                        || (d == '-' && chars.get(i + 1) == Some(&'-'))
                    {
                        out.push('\\');
                    }
                    out.push(d);
                    i += 1;
                }
                if i < chars.len() {
                    out.push(']');
                }
            }
            '{' => {
                let rest: String = chars[i + 1..].iter().take(24).collect();
                let bound = rest.find('}').is_some_and(|end| {
                    let inner = &rest[..end];
                    let mut parts = inner.splitn(2, ',');
                    let lo = parts.next().unwrap_or("");
                    let hi = parts.next();
                    !lo.is_empty()
                        && lo.bytes().all(|b| b.is_ascii_digit())
                        && hi.is_none_or(|h| h.bytes().all(|b| b.is_ascii_digit()))
                });
                if bound && !out.is_empty() {
                    out.push('{');
                    in_bound = true;
                } else {
                    out.push_str("\\{");
                }
            }
            '}' if in_bound => {
                out.push('}');
                in_bound = false;
            }
            '}' => out.push_str("\\}"),
            _ => out.push(c),
        }
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `read_streaming` hands over exactly the hosts `read` keeps, with the same skipped
    /// lines and binary verdict, for every format.
    #[test]
    #[allow(clippy::unwrap_used)]
    fn streaming_reads_what_read_keeps() {
        let dir = tempfile::tempdir().unwrap();
        let domains = dir.path().join("d.txt");
        fs::write(
            &domains,
            b"# c\r\nA.com\r\n\nbad host\n*.b.org # x\nc\xc3\xa9.fr\n\xffx.com\nlast.net",
        )
        .unwrap();
        let hosts = dir.path().join("h.txt");
        fs::write(
            &hosts,
            "0.0.0.0 a.com b.com\nnotip c.com\n127.0.0.1 localhost\n",
        )
        .unwrap();
        let ut1 = dir.path().join("cat");
        fs::create_dir(&ut1).unwrap();
        fs::write(ut1.join("domains"), b"x.com\ny.com\x00\n").unwrap();
        fs::write(ut1.join("urls"), "x.com/path\n").unwrap();
        for (format, path) in [
            (ListFormat::Domains, &domains),
            (ListFormat::Hosts, &hosts),
            (ListFormat::Ut1, &ut1),
        ] {
            let kept = read(format, path).unwrap();
            let mut streamed_hosts = Vec::new();
            let streamed =
                read_streaming(format, path, &mut |h| streamed_hosts.push(h.clone())).unwrap();
            assert_eq!(streamed_hosts, kept.domains, "{format:?}");
            assert!(streamed.domains.is_empty());
            assert_eq!(streamed.streamed_domains, kept.domains.len());
            assert_eq!(streamed.len(), kept.len());
            assert_eq!(streamed.skipped, kept.skipped, "{format:?}");
            assert_eq!(streamed.urls, kept.urls);
            assert_eq!(streamed.binary, kept.binary, "{format:?}");
        }
        let kept = read(ListFormat::Domains, &domains).unwrap();
        assert_eq!(kept.domains.len(), 4, "{:?}", kept.domains);
        assert!(read(ListFormat::Ut1, &ut1).unwrap().binary.is_some());
    }

    #[test]
    fn domains_format() {
        let mut e = Entries::default();
        let text = "# comment\nExample.COM\n\n*.wild.org\n.dot.net\nbad host\nxn--bcher-kva.de # tail\n-=bad=-\n";
        parse_domains(text, Path::new("t"), &mut e);
        let got: Vec<&str> = e.domains.iter().map(Host::as_str).collect();
        assert_eq!(
            got,
            ["example.com", "wild.org", "dot.net", "xn--bcher-kva.de"]
        );
        assert_eq!(e.skipped.len(), 2);
        assert_eq!(e.skipped[0].line, 6);
        assert_eq!(e.skipped[1].line, 8);
    }

    #[test]
    fn hosts_format() {
        let mut e = Entries::default();
        let text = "127.0.0.1 localhost\n::1 ip6-localhost ip6-loopback\n0.0.0.0 0.0.0.0\n0.0.0.0 a.com b.com # x\n127.0.0.1\tWWW.C.COM\nnotip d.com\n0.0.0.0\n";
        parse_hosts(text, Path::new("h"), &mut e);
        let got: Vec<&str> = e.domains.iter().map(Host::as_str).collect();
        assert_eq!(got, ["a.com", "b.com", "www.c.com"]);
        let lines: Vec<usize> = e.skipped.iter().map(|s| s.line).collect();
        assert_eq!(lines, [6, 7]);
    }

    #[test]
    fn urls_format() {
        let mut e = Entries::default();
        parse_urls("Example.com/A/./b\nhost.org\n", Path::new("u"), &mut e);
        assert_eq!(e.urls[0].0.as_str(), "example.com");
        assert_eq!(e.urls[0].1, "/A/b");
        assert_eq!(e.urls[1].1, "/");
    }

    #[test]
    fn ere_translation() {
        assert_eq!(translate_ere(r"[\.]x"), r"[\\.]x");
        assert_eq!(translate_ere(r"a{2,3}"), r"a{2,3}");
        assert_eq!(translate_ere(r"a{b}"), r"a\{b\}");
        assert_eq!(translate_ere(r"[[:alpha:]]+"), r"[[:alpha:]]+");
        assert_eq!(translate_ere(r"[]a]"), r"[\]a]");
        assert_eq!(translate_ere(r"[a[b]"), r"[a\[b]");
        for e in [r"[\.]x", r"a{b}", r"[a[b]", r"x[&&]", "{x"] {
            assert!(check_expression(&translate_ere(e)).is_ok(), "{e}");
        }
        let mut entries = Entries::default();
        parse_expressions("(a|b\n{x}\nok[\\/]\n", Path::new("e"), &mut entries);
        assert_eq!(entries.expressions, ["\\{x\\}", "ok[\\\\/]"]);
        assert_eq!(entries.skipped.len(), 1);
    }
}
