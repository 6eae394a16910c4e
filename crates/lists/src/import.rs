//! `safegate lists import` (with the `fetch` feature): fetch a third-party list collection (today the UT1
//! blacklists of Université Toulouse Capitole) and install it in a lists folder that
//! the policy file references with `format = "ut1"`.
//!
//! The archive is untrusted input. It is downloaded (http/https, size-limited,
//! with a timeout, TLS always verified) or read from a local file into a staging
//! folder beside the destination; its gzip checksum is verified; only
//! `<category>/<list file>` entries with known list file names are written (by this
//! code, never by the tar library's own unpacker); absolute paths, `..` components,
//! links that point anywhere but a sibling category and special files make the whole
//! archive refused. Only when everything is extracted is the new folder renamed into
//! place; on any failure the previous lists stay untouched.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, BufWriter, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Files that a UT1 category folder may hold, in the order the summary lists them.
const LIST_FILES: [&str; 5] = [
    "domains",
    "urls",
    "expressions",
    "very_restrictive_expression",
    "usage",
];

/// Files kept from the top of the archive (the category catalogue and the licence).
const TOP_LEVEL_FILES: [&str; 2] = ["global_usage", "LICENSE.pdf"];

/// Upper bound on everything the archive expands to (UT1 in full is well under 1 GiB).
const MAX_EXTRACTED_BYTES: u64 = 4 << 30;

/// Longest category name accepted.
const MAX_CATEGORY_LEN: usize = 64;

/// Default download limit, in MiB.
pub const DEFAULT_MAX_MIB: u64 = 500;

/// Why an import failed; nothing was installed then.
#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// The archive, the source or an option is refused (the message says why).
    #[error("{0}")]
    Refused(String),
    /// A file or folder could not be read or written (`what` says which).
    #[error("{what}")]
    Io {
        /// What was being done.
        what: String,
        /// What the operating system said.
        source: io::Error,
    },
    /// The HTTP client could not be set up.
    #[error("cannot set up the HTTP client")]
    Client(#[source] reqwest::Error),
    /// One archive entry is refused or could not be extracted (`what` names it).
    #[error("{what}")]
    Entry {
        /// The entry and what was being done.
        what: String,
        /// Why.
        source: Box<ImportError>,
    },
    /// The import as a whole failed.
    #[error("cannot import UT1 lists from {from}")]
    Failed {
        /// The URL or file given.
        from: String,
        /// Why.
        source: Box<ImportError>,
    },
}

type Result<T, E = ImportError> = std::result::Result<T, E>;

/// `bail!` for a refusal.
macro_rules! refuse {
    ($($arg:tt)*) => {
        return Err(ImportError::Refused(format!($($arg)*)))
    };
}

/// A refusal, as a value.
pub(crate) fn refused(message: impl Into<String>) -> ImportError {
    ImportError::Refused(message.into())
}

/// Adds what was being done to an error, lazily (`anyhow`'s `with_context`).
pub(crate) trait Context<T> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for Result<T, io::Error> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| ImportError::Io {
            what: what(),
            source,
        })
    }
}

impl<T> Context<T> for Result<T, ImportError> {
    fn with_context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|source| ImportError::Entry {
            what: what(),
            source: Box::new(source),
        })
    }
}

/// Where the lists come from and where they go (`safegate lists import`'s options).
#[derive(Debug, Clone)]
pub struct ImportOptions {
    /// An http:// or https:// URL, a file:// URL or a local file (.tar.gz or .tar).
    pub from: String,
    /// Folder to install the lists in, replaced as a whole once they are complete.
    pub into: PathBuf,
    /// Only these categories (an alias keeps the category it points to); empty: all.
    pub categories: Vec<String>,
    /// Largest archive accepted, in MiB (compressed).
    pub max_mib: u64,
    /// Longest download.
    pub timeout: Duration,
}

/// What one category folder holds after the import.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CategorySummary {
    /// Entries (non-empty, non-comment lines) per list file, by file name.
    pub entries: BTreeMap<String, u64>,
    /// For an alias (UT1's porn -> adult), the category it points to.
    pub alias_of: Option<String>,
}

/// Result of a successful import.
#[derive(Debug, Clone)]
pub struct ImportSummary {
    /// The URL or file the archive came from.
    pub source: String,
    /// The folder the lists are now in.
    pub into: PathBuf,
    /// Size of the archive, in bytes.
    pub archive_bytes: u64,
    /// Bytes of list files written.
    pub list_bytes: u64,
    /// Installed categories by name.
    pub categories: BTreeMap<String, CategorySummary>,
    /// Archive entries that were not lists and were left out (e.g. READMEs).
    pub skipped: Vec<String>,
}

impl fmt::Display for ImportSummary {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let aliases = self
            .categories
            .values()
            .filter(|c| c.alias_of.is_some())
            .count();
        writeln!(
            f,
            "Imported {} UT1 categories and {} aliases from {} into {} ({} archive, {} of lists):",
            self.categories.len() - aliases,
            aliases,
            self.source,
            self.into.display(),
            human_bytes(self.archive_bytes),
            human_bytes(self.list_bytes),
        )?;
        let width = self.categories.keys().map(String::len).max().unwrap_or(0);
        let mut totals: BTreeMap<&str, u64> = BTreeMap::new();
        for (name, category) in &self.categories {
            if let Some(target) = &category.alias_of {
                writeln!(f, "  {name:<width$}  -> {target}")?;
                continue;
            }
            let mut parts = Vec::new();
            for file in LIST_FILES.iter().filter(|file| **file != "usage") {
                if let Some(count) = category.entries.get(*file) {
                    parts.push(format!("{count} {file}"));
                    *totals.entry(file).or_default() += count;
                }
            }
            if parts.is_empty() {
                parts.push("no list files".to_owned());
            }
            writeln!(f, "  {name:<width$}  {}", parts.join(", "))?;
        }
        let total: Vec<String> = LIST_FILES
            .iter()
            .filter_map(|file| totals.get(file).map(|count| format!("{count} {file}")))
            .collect();
        writeln!(f, "Total: {}.", total.join(", "))?;
        if !self.skipped.is_empty() {
            writeln!(
                f,
                "Left out {} archive entries that are not lists (e.g. {}).",
                self.skipped.len(),
                self.skipped[0]
            )?;
        }
        Ok(())
    }
}

/// Imports a UT1 collection: fetches, checks, extracts and installs the lists.
/// Progress goes to stderr; the returned summary is for stdout.
pub fn import_ut1(args: &ImportOptions) -> Result<ImportSummary> {
    import(args).map_err(|source| ImportError::Failed {
        from: args.from.clone(),
        source: Box::new(source),
    })
}

fn import(args: &ImportOptions) -> Result<ImportSummary> {
    let wanted = wanted_categories(&args.categories)?;
    let max_bytes = args.max_mib.saturating_mul(1 << 20);
    let into = &args.into;
    let parent = match into.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if into.file_name().is_none() {
        refuse!("--into {} must name a folder (not / or ..)", into.display());
    }
    fs::create_dir_all(&parent)
        .with_context(|| format!("cannot create folder {}", parent.display()))?;
    // Staging beside the destination: same file system, so the final rename is atomic,
    // and removed with everything in it (download, half-extracted lists, old lists)
    // when this function returns.
    let staging = tempfile::Builder::new()
        .prefix(".safegate-import-")
        .tempdir_in(&parent)
        .with_context(|| format!("cannot create a staging folder in {}", parent.display()))?;

    let (mut archive, archive_bytes) = match Source::parse(&args.from)? {
        Source::Http(url) => {
            let path = staging.path().join("download");
            let bytes = download(&url, &path, max_bytes, args.timeout)?;
            let file = File::open(&path)
                .with_context(|| format!("cannot reopen the download {}", path.display()))?;
            (file, bytes)
        }
        Source::File(path) => {
            let file =
                File::open(&path).with_context(|| format!("cannot open {}", path.display()))?;
            let bytes = file
                .metadata()
                .with_context(|| format!("cannot read {}", path.display()))?
                .len();
            if bytes > max_bytes {
                refuse!(
                    "{} is {}, more than the limit of {} MiB (raise it with --max-mib)",
                    path.display(),
                    human_bytes(bytes),
                    args.max_mib
                );
            }
            (file, bytes)
        }
    };

    let lists = staging.path().join("lists");
    fs::create_dir(&lists).with_context(|| format!("cannot create {}", lists.display()))?;
    let extracted = extract(&mut archive, &lists)?;
    let categories = select(&extracted, &lists, wanted.as_ref())?;
    let list_bytes = categories
        .keys()
        .filter(|name| extracted.categories.contains_key(*name))
        .map(|name| extracted.bytes.get(name).copied().unwrap_or(0))
        .sum();
    install(&lists, into, &staging.path().join("previous"))?;
    let staging_path = staging.path().to_path_buf();
    staging
        .close()
        .with_context(|| format!("cannot remove {}", staging_path.display()))?;
    Ok(ImportSummary {
        source: args.from.clone(),
        into: into.clone(),
        archive_bytes,
        list_bytes,
        categories,
        skipped: extracted.skipped,
    })
}

/// Where the archive comes from.
pub(crate) enum Source {
    Http(reqwest::Url),
    File(PathBuf),
}

impl Source {
    pub(crate) fn parse(from: &str) -> Result<Self> {
        let lower = from.to_ascii_lowercase();
        if lower.starts_with("http://") || lower.starts_with("https://") {
            let url =
                reqwest::Url::parse(from).map_err(|e| refused(format!("invalid URL: {e}")))?;
            return Ok(Self::Http(url));
        }
        if lower.starts_with("file:") {
            let url =
                reqwest::Url::parse(from).map_err(|e| refused(format!("invalid URL: {e}")))?;
            let path = url
                .to_file_path()
                .map_err(|()| refused("a file:// URL must name a local absolute path"))?;
            return Ok(Self::File(path));
        }
        if let Some((scheme, _)) = from.split_once("://") {
            refuse!("unsupported URL scheme {scheme:?} (use http, https, file or a local path)");
        }
        Ok(Self::File(PathBuf::from(from)))
    }
}

/// Downloads `url` into `path`; returns its size.
pub(crate) fn download(
    url: &reqwest::Url,
    path: &Path,
    max_bytes: u64,
    timeout: Duration,
) -> Result<u64> {
    match fetch(url, path, max_bytes, timeout, &Validators::default())? {
        Fetched::Body { bytes, .. } => Ok(bytes),
        Fetched::NotModified => refuse!("the server answered 304 Not Modified to a plain GET"),
    }
}

/// A version of a download as the server named it, for a conditional GET.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Validators {
    /// The `ETag` header (sent back as `If-None-Match`).
    pub etag: Option<String>,
    /// The `Last-Modified` header (sent back as `If-Modified-Since`).
    pub last_modified: Option<String>,
}

/// What a conditional download brought.
pub(crate) enum Fetched {
    /// The server's copy is the one we have (304).
    NotModified,
    /// A new body, saved to the path given.
    Body {
        /// Its size.
        bytes: u64,
        /// The version the server named.
        validators: Validators,
    },
}

/// Downloads `url` into `path`, sending `known` as `If-None-Match` /
/// `If-Modified-Since` so that an unchanged list is not fetched again.
pub(crate) fn fetch(
    url: &reqwest::Url,
    path: &Path,
    max_bytes: u64,
    timeout: Duration,
    known: &Validators,
) -> Result<Fetched> {
    // Never follow a redirect from https down to plain http.
    let redirects = reqwest::redirect::Policy::custom(|attempt| {
        let downgrade = attempt
            .previous()
            .iter()
            .any(|previous| previous.scheme() == "https")
            && attempt.url().scheme() != "https";
        if downgrade {
            let to = attempt.url().to_string();
            attempt.error(format!("refusing a redirect from https to {to}"))
        } else if attempt.previous().len() >= 10 {
            attempt.error("too many redirects")
        } else {
            attempt.follow()
        }
    });
    let client = reqwest::blocking::Client::builder()
        .user_agent(concat!("SafeGate/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(Duration::from_secs(30).min(timeout))
        .timeout(timeout)
        .redirect(redirects)
        .build()
        .map_err(ImportError::Client)?;
    eprintln!("safegate: downloading {url}");
    let started = Instant::now();
    let mut request = client.get(url.clone());
    if let Some(etag) = &known.etag {
        request = request.header(reqwest::header::IF_NONE_MATCH, etag);
    }
    if let Some(date) = &known.last_modified {
        request = request.header(reqwest::header::IF_MODIFIED_SINCE, date);
    }
    let mut response = request
        .send()
        .map_err(|e| refused(format!("download failed: {}", error_chain(&e))))?;
    let status = response.status();
    if status == reqwest::StatusCode::NOT_MODIFIED {
        eprintln!("safegate: {url} has not changed");
        return Ok(Fetched::NotModified);
    }
    let header = |name: reqwest::header::HeaderName| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let validators = Validators {
        etag: header(reqwest::header::ETAG),
        last_modified: header(reqwest::header::LAST_MODIFIED),
    };
    if !status.is_success() {
        refuse!("the server answered {status}, not the archive");
    }
    let length = response.content_length();
    if let Some(length) = length.filter(|length| *length > max_bytes) {
        refuse!(
            "the archive is {}, more than the limit of {} (raise it with --max-mib)",
            human_bytes(length),
            human_bytes(max_bytes)
        );
    }
    let mut file =
        File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut buffer = vec![0u8; 64 * 1024];
    let mut received: u64 = 0;
    let mut reported: u64 = 0;
    let step = length.map_or(16 << 20, |length| (length / 10).max(1 << 20));
    loop {
        let n = response.read(&mut buffer).map_err(|e| {
            refused(format!(
                "download failed after {}: {}",
                human_bytes(received),
                error_chain(&e)
            ))
        })?;
        if n == 0 {
            break;
        }
        received += n as u64;
        if received > max_bytes {
            refuse!(
                "the archive is bigger than the limit of {} (raise it with --max-mib)",
                human_bytes(max_bytes)
            );
        }
        file.write_all(&buffer[..n])
            .with_context(|| format!("cannot write {}", path.display()))?;
        if received - reported >= step {
            reported = received;
            match length {
                Some(length) => eprintln!(
                    "safegate: {} of {} ({}%)",
                    human_bytes(received),
                    human_bytes(length),
                    received * 100 / length.max(1)
                ),
                None => eprintln!("safegate: {}", human_bytes(received)),
            }
        }
    }
    if let Some(length) = length.filter(|length| received != *length) {
        refuse!(
            "the download ended after {} of the {} announced",
            human_bytes(received),
            human_bytes(length)
        );
    }
    file.sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    eprintln!(
        "safegate: downloaded {} in {:.1}s",
        human_bytes(received),
        started.elapsed().as_secs_f64()
    );
    Ok(Fetched::Body {
        bytes: received,
        validators,
    })
}

/// Lists of `reqwest` and I/O errors hide the useful part (connection refused, TLS
/// certificate problem) in their sources.
pub(crate) fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
    text
}

/// What the archive held.
#[derive(Debug, Default)]
pub(crate) struct Extracted {
    /// Real categories: entries per list file.
    categories: BTreeMap<String, BTreeMap<String, u64>>,
    /// Bytes written per real category.
    bytes: BTreeMap<String, u64>,
    /// Aliases (symbolic links between categories): name -> target.
    aliases: BTreeMap<String, String>,
    /// Entries left out.
    skipped: Vec<String>,
}

/// Reader that fails once more than `remaining` bytes came through (gzip bombs).
struct Limited<R> {
    inner: R,
    remaining: u64,
}

impl<R: Read> Read for Limited<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.remaining = self.remaining.checked_sub(n as u64).ok_or_else(|| {
            io::Error::other(format!(
                "the archive expands to more than {}",
                human_bytes(MAX_EXTRACTED_BYTES)
            ))
        })?;
        Ok(n)
    }
}

/// Where an archive entry belongs.
enum Place {
    /// `<category>/<list file>`.
    List { category: String, file: String },
    /// A name at the top of the collection (an alias, `global_usage`, ...).
    Top(String),
    /// Directories and anything that is not a list.
    Ignore,
}

/// Extracts the UT1 lists of `archive` into `lists`, checking every entry.
pub(crate) fn extract(archive: &mut File, lists: &Path) -> Result<Extracted> {
    let mut magic = [0u8; 512];
    let mut filled = 0;
    while filled < magic.len() {
        let n = archive
            .read(&mut magic[filled..])
            .with_context(|| "cannot read the archive".to_owned())?;
        if n == 0 {
            break;
        }
        filled += n;
    }
    archive
        .rewind()
        .with_context(|| "cannot read the archive".to_owned())?;
    let reader: Box<dyn Read> = if filled >= 2 && magic[..2] == [0x1f, 0x8b] {
        Box::new(flate2::read::MultiGzDecoder::new(BufReader::with_capacity(
            1 << 16,
            &mut *archive,
        )))
    } else if filled >= 262 && &magic[257..262] == b"ustar" {
        Box::new(BufReader::with_capacity(1 << 16, &mut *archive))
    } else if filled == 0 {
        refuse!("the archive is empty");
    } else {
        let looks_like = if magic[..filled].trim_ascii_start().starts_with(b"<") {
            " (it looks like an HTML or XML page)"
        } else {
            ""
        };
        refuse!("not a tar.gz or tar archive{looks_like}");
    };
    let mut tar = tar::Archive::new(Limited {
        inner: reader,
        remaining: MAX_EXTRACTED_BYTES,
    });
    let mut extracted = Extracted::default();
    let mut top_files = BTreeSet::new();
    let entries = tar.entries().map_err(|e| corrupt(&e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| corrupt(&e))?;
        let raw = entry.path_bytes().into_owned();
        let shown = String::from_utf8_lossy(&raw).into_owned();
        let kind = entry.header().entry_type();
        let place = place(&raw).with_context(|| format!("refusing archive entry {shown:?}"))?;
        match (place, kind) {
            (_, tar::EntryType::XGlobalHeader) => {}
            (Place::Ignore, tar::EntryType::Directory) => {}
            (Place::Ignore, kind) if kind.is_file() => extracted.skipped.push(shown),
            (Place::List { category, file }, kind) if kind.is_file() => {
                let folder = lists.join(&category);
                fs::create_dir_all(&folder)
                    .with_context(|| format!("cannot create {}", folder.display()))?;
                let (entries, bytes) = write_list(&mut entry, &folder.join(&file))
                    .with_context(|| format!("cannot extract {shown}"))?;
                extracted
                    .categories
                    .entry(category.clone())
                    .or_default()
                    .insert(file, entries);
                *extracted.bytes.entry(category).or_default() += bytes;
            }
            (Place::Top(name), tar::EntryType::Symlink) => {
                let target = entry
                    .link_name_bytes()
                    .map(|target| target.into_owned())
                    .unwrap_or_default();
                let target = sibling(&target).ok_or_else(|| {
                    refused(format!(
                        "refusing archive entry {shown:?}: a link to {:?}; only links to a sibling category are allowed",
                        String::from_utf8_lossy(&target)
                    ))
                })?;
                if valid_category(&name) {
                    extracted.aliases.insert(name, target);
                } else {
                    extracted.skipped.push(shown);
                }
            }
            (Place::Top(name), kind) if kind.is_file() => {
                if TOP_LEVEL_FILES.contains(&name.as_str()) {
                    let path = lists.join(&name);
                    write_list(&mut entry, &path)
                        .with_context(|| format!("cannot extract {shown}"))?;
                    top_files.insert(name);
                } else if let Some(target) = alias_file(&mut entry, &name)? {
                    // A checkout without symbolic links: a tiny file holding the target name.
                    extracted.aliases.insert(name, target);
                } else {
                    extracted.skipped.push(shown);
                }
            }
            (_, tar::EntryType::Directory) => {}
            (_, kind) => refuse!(
                "refusing archive entry {shown:?}: {} entries are not allowed in a list archive",
                kind_name(kind)
            ),
        }
    }
    // Read to the very end so that the gzip checksum and length are verified.
    io::copy(&mut tar.into_inner(), &mut io::sink()).map_err(|e| corrupt(&e))?;
    // An alias that is also a real folder stays a folder.
    extracted
        .aliases
        .retain(|name, _| !extracted.categories.contains_key(name));
    if extracted.categories.is_empty() {
        refuse!(
            "no UT1 categories found in the archive (expected blacklists/<category>/domains, urls, ...)"
        );
    }
    Ok(extracted)
}

fn corrupt(error: &io::Error) -> ImportError {
    refused(format!(
        "the archive is damaged or incomplete: {}",
        error_chain(error)
    ))
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Link => "hard link",
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        _ => "special",
    }
}

/// Classifies an archive path; refuses absolute paths and `..`.
fn place(raw: &[u8]) -> Result<Place> {
    if raw.first() == Some(&b'/') {
        refuse!("absolute path");
    }
    if raw.contains(&b'\\') {
        refuse!("backslash in path");
    }
    let mut parts = Vec::new();
    for part in raw.split(|b| *b == b'/') {
        match part {
            b"" | b"." => {}
            b".." => refuse!("\"..\" in path"),
            part => parts.push(String::from_utf8_lossy(part).into_owned()),
        }
    }
    // Layouts: blacklists/<category>/<file> (the UT1 tarball), <category>/<file>
    // (a single-category tarball), and top-level names (aliases, global_usage).
    let is_list = |file: &str| LIST_FILES.contains(&file);
    Ok(match parts.as_slice() {
        [_, category, file] | [category, file] if is_list(file) => {
            if !valid_category(category) {
                refuse!(
                    "invalid category name {category:?} (letters, digits, _ and -, at most {MAX_CATEGORY_LEN} characters)"
                );
            }
            Place::List {
                category: category.clone(),
                file: file.clone(),
            }
        }
        [_, name] | [name] => Place::Top(name.clone()),
        _ => Place::Ignore,
    })
}

/// Category names: ASCII letters, digits, `_`, `-` (UT1 has e.g. residential-proxies).
fn valid_category(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_CATEGORY_LEN
        && !name.starts_with('-')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// The category a link target names, if it is a plain sibling (`adult`, `./adult`,
/// `adult/`).
fn sibling(target: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(target).ok()?;
    let text = text.strip_prefix("./").unwrap_or(text);
    let text = text.strip_suffix('/').unwrap_or(text);
    valid_category(text).then(|| text.to_owned())
}

/// A top-level file that only holds a category name (how a symbolic link looks after
/// a copy that does not keep links).
fn alias_file(entry: &mut impl Read, name: &str) -> Result<Option<String>> {
    if !valid_category(name) {
        return Ok(None);
    }
    let mut content = Vec::new();
    entry
        .take(MAX_CATEGORY_LEN as u64 + 2)
        .read_to_end(&mut content)
        .map_err(|e| corrupt(&e))?;
    Ok(sibling(content.trim_ascii()).filter(|target| target != name))
}

/// Writes one list file; returns (entries, bytes). Entries are non-empty lines that
/// are not `#` comments.
fn write_list(entry: &mut impl Read, path: &Path) -> Result<(u64, u64)> {
    let file = File::create(path).with_context(|| format!("cannot create {}", path.display()))?;
    let mut writer = BufWriter::with_capacity(1 << 16, file);
    let mut reader = BufReader::with_capacity(1 << 16, entry);
    let mut line = Vec::new();
    let (mut entries, mut bytes) = (0u64, 0u64);
    loop {
        line.clear();
        let n = reader
            .read_until(b'\n', &mut line)
            .map_err(|e| corrupt(&e))?;
        if n == 0 {
            break;
        }
        bytes += n as u64;
        let text = line.trim_ascii();
        if !text.is_empty() && !text.starts_with(b"#") {
            entries += 1;
        }
        writer
            .write_all(&line)
            .with_context(|| format!("cannot write {}", path.display()))?;
    }
    let file = writer
        .into_inner()
        .map_err(|e| refused(format!("cannot write {}: {}", path.display(), e.error())))?;
    file.sync_all()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok((entries, bytes))
}

/// `--categories`, validated; `None` keeps everything.
fn wanted_categories(requested: &[String]) -> Result<Option<BTreeSet<String>>> {
    let mut wanted = BTreeSet::new();
    for name in requested.iter().map(|name| name.trim()) {
        if name.is_empty() {
            continue;
        }
        if !valid_category(name) {
            refuse!("--categories: {name:?} is not a category name");
        }
        wanted.insert(name.to_owned());
    }
    Ok((!wanted.is_empty()).then_some(wanted))
}

/// Keeps the wanted categories (removing the rest from `lists`), recreates aliases,
/// and returns the summary per category.
pub(crate) fn select(
    extracted: &Extracted,
    lists: &Path,
    wanted: Option<&BTreeSet<String>>,
) -> Result<BTreeMap<String, CategorySummary>> {
    let mut keep_real: BTreeSet<String> = BTreeSet::new();
    let mut keep_alias: BTreeMap<String, String> = BTreeMap::new();
    match wanted {
        None => {
            keep_real.extend(extracted.categories.keys().cloned());
            for (name, target) in &extracted.aliases {
                if extracted.categories.contains_key(target) {
                    keep_alias.insert(name.clone(), target.clone());
                } else {
                    eprintln!(
                        "safegate: leaving out alias {name}: it points to {target}, which is not in the archive"
                    );
                }
            }
        }
        Some(wanted) => {
            let mut missing = Vec::new();
            for name in wanted {
                if extracted.categories.contains_key(name) {
                    keep_real.insert(name.clone());
                } else if let Some(target) = extracted
                    .aliases
                    .get(name)
                    .filter(|target| extracted.categories.contains_key(*target))
                {
                    keep_real.insert(target.clone());
                    keep_alias.insert(name.clone(), target.clone());
                } else {
                    missing.push(name.as_str());
                }
            }
            if !missing.is_empty() {
                let available: Vec<&str> = extracted
                    .categories
                    .keys()
                    .chain(extracted.aliases.keys())
                    .map(String::as_str)
                    .collect();
                refuse!(
                    "--categories: {} not in the archive (it has: {})",
                    missing.join(", "),
                    available.join(", ")
                );
            }
            for name in extracted.categories.keys() {
                if !keep_real.contains(name) {
                    let path = lists.join(name);
                    fs::remove_dir_all(&path)
                        .with_context(|| format!("cannot remove {}", path.display()))?;
                }
            }
        }
    }
    let mut summary = BTreeMap::new();
    for name in keep_real {
        let entries = extracted.categories.get(&name).cloned().unwrap_or_default();
        summary.insert(
            name,
            CategorySummary {
                entries,
                alias_of: None,
            },
        );
    }
    for (name, target) in keep_alias {
        link_category(lists, &name, &target)?;
        summary.insert(
            name,
            CategorySummary {
                entries: BTreeMap::new(),
                alias_of: Some(target),
            },
        );
    }
    Ok(summary)
}

/// Recreates an alias as a relative symbolic link to its sibling (a copy where
/// symbolic links are not available).
fn link_category(lists: &Path, name: &str, target: &str) -> Result<()> {
    let link = lists.join(name);
    #[cfg(unix)]
    {
        std::os::unix::fs::symlink(target, &link)
            .with_context(|| format!("cannot create link {} -> {target}", link.display()))
    }
    #[cfg(not(unix))]
    {
        fs::create_dir(&link).with_context(|| format!("cannot create {}", link.display()))?;
        let folder = lists.join(target);
        let read = || format!("cannot read {}", folder.display());
        for file in fs::read_dir(&folder).with_context(read)? {
            let file = file.with_context(read)?;
            fs::copy(file.path(), link.join(file.file_name()))
                .with_context(|| format!("cannot copy {}", file.path().display()))?;
        }
        Ok(())
    }
}

/// Moves `staged` to `into`, the previous folder (if any) to `previous`. If the
/// second rename fails the previous folder is put back.
fn install(staged: &Path, into: &Path, previous: &Path) -> Result<()> {
    let had_previous = match fs::symlink_metadata(into) {
        Ok(meta) if meta.is_dir() || meta.file_type().is_symlink() => true,
        Ok(_) => refuse!("{} exists and is not a folder", into.display()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => false,
        Err(e) => return Err(e).with_context(|| format!("cannot inspect {}", into.display())),
    };
    if had_previous {
        fs::rename(into, previous)
            .with_context(|| format!("cannot move the previous lists {} aside", into.display()))?;
    }
    if let Err(error) = fs::rename(staged, into) {
        if had_previous {
            let _ = fs::rename(previous, into);
        }
        return Err(error)
            .with_context(|| format!("cannot move the new lists to {}", into.display()));
    }
    Ok(())
}

/// `1.5 MiB`, `312 B`.
pub(crate) fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut value = bytes as f64 / 1024.0;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    format!("{value:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn category(raw: &str) -> Option<(String, String)> {
        match place(raw.as_bytes()).ok()? {
            Place::List { category, file } => Some((category, file)),
            _ => None,
        }
    }

    #[test]
    fn places_entries() {
        assert_eq!(
            category("blacklists/adult/urls"),
            Some(("adult".into(), "urls".into()))
        );
        assert_eq!(
            category("./blacklists/adult/domains"),
            Some(("adult".into(), "domains".into()))
        );
        assert_eq!(
            category("gambling/domains"),
            Some(("gambling".into(), "domains".into()))
        );
        assert!(matches!(place(b"blacklists/porn"), Ok(Place::Top(n)) if n == "porn"));
        assert!(matches!(
            place(b"blacklists/adult/README"),
            Ok(Place::Ignore)
        ));
        assert!(place(b"/etc/passwd").is_err());
        assert!(place(b"blacklists/../../x/domains").is_err());
        assert!(place(b"..").is_err());
        assert!(place(b"blacklists/ad\\ult/domains").is_err());
        assert!(place(b"blacklists/.hidden/domains").is_err());
    }

    #[test]
    fn link_targets_must_be_siblings() {
        assert_eq!(sibling(b"adult").as_deref(), Some("adult"));
        assert_eq!(sibling(b"./adult/").as_deref(), Some("adult"));
        assert_eq!(sibling(b"../adult"), None);
        assert_eq!(sibling(b"/etc"), None);
        assert_eq!(sibling(b"adult/domains"), None);
        assert_eq!(sibling(b""), None);
    }

    #[test]
    fn sources() {
        assert!(matches!(
            Source::parse("https://example.org/b.tar.gz"),
            Ok(Source::Http(_))
        ));
        assert!(
            matches!(Source::parse("file:///tmp/b.tar.gz"), Ok(Source::File(p)) if p == Path::new("/tmp/b.tar.gz"))
        );
        assert!(matches!(Source::parse("b.tar.gz"), Ok(Source::File(_))));
        assert!(Source::parse("ftp://example.org/b.tar.gz").is_err());
    }
}
