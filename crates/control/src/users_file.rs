//! Reading a users CSV file for `safegate users import`, and hashing its passwords on
//! every core.
//!
//! # The file
//!
//! CSV (comma-separated, UTF-8, as spreadsheets save it; a byte-order mark is fine)
//! with a header row. Column names are matched without regard to case, spaces,
//! underscores or hyphens; the columns may come in any order:
//!
//! | column                                | required | what |
//! |---------------------------------------|----------|------|
//! | `user` (or `username`, `login`)       | yes      | the log-in name |
//! | `display name` (or `full name`)       | no       | the name people read |
//! | `role`                                | yes      | `pupil`, `staff` or `filter-admin` |
//! | `group` (or `year group`)             | no       | e.g. `year6` |
//! | `permissions`                         | no       | `rules`, `reports`, `metrics`, `users`, separated by `,` `;` or spaces |
//! | `password`                            | one of the two | the password, at least 8 characters |
//! | `password hash`                       | one of the two | an Argon2 PHC string made elsewhere |
//! | `shared`                              | no       | `yes` for a log-in a class shares (a year-group log-in); default `no` |
//!
//! Each row gives a password or a password hash (not both). Fields are trimmed of
//! surrounding spaces, passwords too; blank lines and lines starting with `#` are
//! skipped. An unknown column is refused (a misspelt `group` would otherwise be
//! silently dropped).
//!
//! The reader reports every bad row it can see by itself (a password too short, both
//! or neither password columns, unknown permissions, too many fields, text that is
//! not UTF-8); the database adds its findings (names, roles, groups, duplicates,
//! existing users) before anything is hashed, so a file with mistakes costs no
//! hashing time.

use std::collections::BTreeSet;
use std::io::{IsTerminal, Read, Write};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use safegate_store::password::{self, PasswordError};
use safegate_store::users::parse_permissions;
use safegate_store::{BadRow, ImportRow};

/// Why a users file could not be read or its passwords hashed.
#[derive(Debug, thiserror::Error)]
pub enum UsersFileError {
    /// The file as a whole cannot be used (its layout, its size, its columns).
    #[error("{0}")]
    Invalid(String),
    /// Reading failed (`what` says what was being read).
    #[error("{what}")]
    Read {
        /// What was being read.
        what: String,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file named here has a problem.
    #[error("{}", path.display())]
    InFile {
        /// The file.
        path: std::path::PathBuf,
        /// Its problem.
        source: Box<UsersFileError>,
    },
    /// A password could not be hashed.
    #[error("hashing a password")]
    Hash(#[source] PasswordError),
    /// A hashing thread ended without its hashes.
    #[error("a hashing thread failed")]
    HashThread,
}

type Result<T, E = UsersFileError> = std::result::Result<T, E>;

/// `bail!` for a file that cannot be used.
macro_rules! invalid {
    ($($arg:tt)*) => {
        return Err(UsersFileError::Invalid(format!($($arg)*)))
    };
}

/// A column of the users file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Column {
    User,
    DisplayName,
    Role,
    Group,
    Permissions,
    Password,
    PasswordHash,
    Shared,
}

/// Accepted header names (normalised: lower case, no spaces, `_` or `-`).
const COLUMN_NAMES: [(&str, Column); 13] = [
    ("shared", Column::Shared),
    ("user", Column::User),
    ("username", Column::User),
    ("login", Column::User),
    ("loginname", Column::User),
    ("displayname", Column::DisplayName),
    ("fullname", Column::DisplayName),
    ("role", Column::Role),
    ("group", Column::Group),
    ("yeargroup", Column::Group),
    ("permissions", Column::Permissions),
    ("password", Column::Password),
    ("passwordhash", Column::PasswordHash),
];

/// What the file says the columns are called, for messages.
pub const COLUMNS_HELP: &str =
    "user, display name, role, group, permissions, password, password hash, shared";

fn column_named(header: &str) -> Option<Column> {
    let key: String = header
        .trim()
        .trim_start_matches('\u{feff}')
        .chars()
        .filter(|c| !matches!(c, ' ' | '_' | '-'))
        .flat_map(char::to_lowercase)
        .collect();
    COLUMN_NAMES
        .iter()
        .find(|(name, _)| *name == key)
        .map(|&(_, column)| column)
}

/// A file read: the rows, their passwords still to hash, and the bad rows found.
#[derive(Default)]
pub struct ReadFile {
    /// Rows with what could be read; hashes filled in for `password hash` rows.
    pub rows: Vec<ImportRow>,
    /// For each row, its plain password when the file gave one (to hash later).
    pub passwords: Vec<Option<String>>,
    /// Problems found in the file by itself.
    pub bad_rows: Vec<BadRow>,
}

/// Reads a users CSV file.
pub fn read_file(path: &Path) -> Result<ReadFile> {
    let file = std::fs::File::open(path).map_err(|source| UsersFileError::Read {
        what: format!("cannot open {}", path.display()),
        source,
    })?;
    read(file).map_err(|source| UsersFileError::InFile {
        path: path.to_path_buf(),
        source: Box::new(source),
    })
}

/// Longest users file read (a school's users fit in a few megabytes).
const MAX_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// One CSV record: its fields (raw bytes) and the line it starts on.
#[derive(Debug, PartialEq, Eq)]
struct CsvRecord {
    line: u64,
    fields: Vec<Vec<u8>>,
}

/// Splits CSV (RFC 4180: `,` between fields, CRLF or LF between records, fields in
/// double quotes may hold commas, line breaks and `""`) into records, each with the
/// line it starts on. Lenient where spreadsheets and people are: a UTF-8 byte-order
/// mark is skipped, spaces before an opening quote are allowed, text after a closing
/// quote is kept. Blank lines and lines starting with `#` are skipped. (The csv crate
/// miscounts lines after CRLF, blank and comment lines, and a report must name the
/// right line.)
fn split_records(input: &[u8]) -> Result<Vec<CsvRecord>> {
    let input = input.strip_prefix(b"\xef\xbb\xbf").unwrap_or(input);
    let mut records = Vec::new();
    let mut line: u64 = 1;
    let mut i = 0;
    while i < input.len() {
        let start_line = line;
        match input[i..] {
            [b'\n', ..] => {
                line += 1;
                i += 1;
                continue;
            }
            [b'\r', b'\n', ..] => {
                line += 1;
                i += 2;
                continue;
            }
            [b'#', ..] => {
                match input[i..].iter().position(|&b| b == b'\n') {
                    Some(end) => i += end + 1,
                    None => i = input.len(),
                }
                line += 1;
                continue;
            }
            _ => {}
        }
        let mut fields = Vec::new();
        loop {
            let mut field = Vec::new();
            let spaces = input[i..]
                .iter()
                .take_while(|&&b| b == b' ' || b == b'\t')
                .count();
            if input.get(i + spaces) == Some(&b'"') {
                i += spaces + 1;
                loop {
                    match input.get(i) {
                        None => invalid!(
                            "line {start_line}: a field in double quotes is not closed (a \" is \
                             missing; a \" inside a quoted field is written \"\")"
                        ),
                        Some(b'"') if input.get(i + 1) == Some(&b'"') => {
                            field.push(b'"');
                            i += 2;
                        }
                        Some(b'"') => {
                            i += 1;
                            break;
                        }
                        Some(&byte) => {
                            if byte == b'\n' {
                                line += 1;
                            }
                            field.push(byte);
                            i += 1;
                        }
                    }
                }
            }
            while let Some(&byte) = input.get(i)
                && byte != b','
                && byte != b'\n'
            {
                field.push(byte);
                i += 1;
            }
            fields.push(field);
            match input.get(i) {
                Some(b',') => i += 1,
                Some(_) => {
                    // The line break.
                    i += 1;
                    line += 1;
                    break;
                }
                None => break,
            }
        }
        if let Some(last) = fields.last_mut()
            && last.last() == Some(&b'\r')
        {
            last.pop();
        }
        records.push(CsvRecord {
            line: start_line,
            fields,
        });
    }
    Ok(records)
}

/// Reads users CSV text.
pub fn read(input: impl std::io::Read) -> Result<ReadFile> {
    let mut bytes = Vec::new();
    input
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| UsersFileError::Read {
            what: "cannot read the file".to_owned(),
            source,
        })?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        invalid!(
            "the file is larger than {} MiB",
            MAX_FILE_BYTES / (1024 * 1024)
        );
    }
    let all_blank = |record: &CsvRecord| {
        record
            .fields
            .iter()
            .all(|field| field.iter().all(u8::is_ascii_whitespace))
    };
    let mut records = split_records(&bytes)?
        .into_iter()
        .filter(|record| !all_blank(record));
    let Some(headers) = records.next() else {
        invalid!("the file is empty: the first line must name the columns ({COLUMNS_HELP})");
    };
    let header_line = headers.line;
    let mut columns = Vec::with_capacity(headers.fields.len());
    for (i, header) in headers.fields.iter().enumerate() {
        let text = String::from_utf8_lossy(header);
        let Some(column) = column_named(&text) else {
            invalid!(
                "line {header_line}: column {} is called {:?}, which SafeGate does not know \
                 (columns: {COLUMNS_HELP})",
                i + 1,
                text.trim()
            );
        };
        if columns.contains(&column) {
            invalid!("line {header_line}: column {:?} appears twice", text.trim());
        }
        columns.push(column);
    }
    for (required, name) in [(Column::User, "user"), (Column::Role, "role")] {
        if !columns.contains(&required) {
            invalid!("line {header_line}: there is no {name:?} column (columns: {COLUMNS_HELP})");
        }
    }
    if !columns.contains(&Column::Password) && !columns.contains(&Column::PasswordHash) {
        invalid!("line {header_line}: there is no \"password\" or \"password hash\" column");
    }

    let mut read = ReadFile::default();
    for record in records {
        let line = record.line;
        let mut problems = Vec::new();
        if record.fields.len() > columns.len() {
            problems.push(format!(
                "{} fields, but the header names {} columns (a field with a comma in it must be \
                 in double quotes; password hashes have commas)",
                record.fields.len(),
                columns.len()
            ));
        }
        let mut field = |column: Column| -> Option<String> {
            let index = columns.iter().position(|&c| c == column)?;
            let bytes = record.fields.get(index)?;
            let text = match std::str::from_utf8(bytes) {
                Ok(text) => text.trim(),
                Err(_) => {
                    problems.push(format!(
                        "column {} is not UTF-8 text (save the file as \"CSV UTF-8\")",
                        index + 1
                    ));
                    ""
                }
            };
            (!text.is_empty()).then(|| text.to_owned())
        };
        let name = field(Column::User).unwrap_or_default();
        let display_name = field(Column::DisplayName);
        let role = field(Column::Role).unwrap_or_default();
        let group = field(Column::Group);
        let permissions_field = field(Column::Permissions);
        let plain = field(Column::Password);
        let hash = field(Column::PasswordHash);
        let shared = match field(Column::Shared).as_deref().map(yes_no) {
            None => false,
            Some(Some(shared)) => shared,
            Some(None) => {
                problems.push("shared must be yes or no".to_owned());
                false
            }
        };
        let permissions = match permissions_field.as_deref().map(parse_permissions) {
            None => BTreeSet::new(),
            Some(Ok(permissions)) => permissions,
            Some(Err(err)) => {
                problems.push(err.to_string());
                BTreeSet::new()
            }
        };
        let password = match (plain, &hash) {
            (Some(_), Some(_)) => {
                problems.push("give a password or a password hash, not both".to_owned());
                None
            }
            (None, None) => {
                problems.push("no password (and no password hash)".to_owned());
                None
            }
            (Some(plain), None) => {
                if let Err(err) = password::check_password(&plain) {
                    problems.push(err.to_string());
                }
                Some(plain)
            }
            (None, Some(_)) => None,
        };
        read.bad_rows
            .extend(problems.into_iter().map(|reason| BadRow {
                line,
                user: name.clone(),
                reason,
            }));
        read.rows.push(ImportRow {
            shared,
            line,
            name,
            display_name,
            role,
            group,
            permissions,
            password_hash: hash,
        });
        read.passwords.push(password);
    }
    if read.rows.is_empty() && read.bad_rows.is_empty() {
        invalid!("there are no users in it, only the header row");
    }
    Ok(read)
}

/// `yes`, `no`, `true`, `false`, `y`, `n`, `1`, `0` (any case); `None` otherwise.
pub fn yes_no(text: &str) -> Option<bool> {
    match text.trim().to_ascii_lowercase().as_str() {
        "yes" | "y" | "true" | "1" => Some(true),
        "no" | "n" | "false" | "0" | "" => Some(false),
        _ => None,
    }
}

/// Hashes `passwords` (each already checked) on every core, reporting progress on a
/// terminal; the hashes come back in order.
pub fn hash_all(passwords: &[&str], progress: &mut dyn Write) -> Result<Vec<String>> {
    let total = passwords.len();
    if total == 0 {
        return Ok(Vec::new());
    }
    let threads = std::thread::available_parallelism()
        .map_or(1, std::num::NonZero::get)
        .min(total);
    let per_thread = total.div_ceil(threads);
    let started = Instant::now();
    let done = AtomicUsize::new(0);
    let show = std::io::stderr().is_terminal();
    let mut results: Vec<Option<Result<String, PasswordError>>> = vec![None; total];
    std::thread::scope(|scope| {
        let workers: Vec<_> = passwords
            .chunks(per_thread)
            .zip(results.chunks_mut(per_thread))
            .map(|(inputs, outputs)| {
                let done = &done;
                scope.spawn(move || {
                    for (input, output) in inputs.iter().zip(outputs) {
                        *output = Some(password::hash_password(input));
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        while !workers.iter().all(|w| w.is_finished()) {
            std::thread::sleep(Duration::from_millis(200));
            if show {
                let _ = write!(
                    progress,
                    "\rhashing passwords: {}/{total}",
                    done.load(Ordering::Relaxed)
                );
                let _ = progress.flush();
            }
        }
    });
    if show {
        let _ = write!(progress, "\r");
    }
    let hashes = results
        .into_iter()
        .map(|result| match result {
            Some(Ok(hash)) => Ok(hash),
            Some(Err(err)) => Err(UsersFileError::Hash(err)),
            None => Err(UsersFileError::HashThread),
        })
        .collect::<Result<Vec<String>>>()?;
    let _ = writeln!(
        progress,
        "hashed {total} password(s) in {:.1} s on {threads} thread(s)",
        started.elapsed().as_secs_f64()
    );
    Ok(hashes)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn headers_are_matched_loosely_and_rows_keep_their_lines() {
        let text = "\u{feff}User,Display_Name,ROLE,year group,Password\r\n\
                    ada.lovelace, Ada Lovelace ,staff,,correct horse\r\n\
                    \r\n\
                    # a comment\r\n\
                    year6,\"Year 6, all pupils\",pupil,year6,sunflower22\r\n";
        let read = read(text.as_bytes()).unwrap();
        assert!(read.bad_rows.is_empty(), "{:?}", read.bad_rows);
        assert_eq!(read.rows.len(), 2);
        assert_eq!(read.rows[0].line, 2);
        assert_eq!(read.rows[0].name, "ada.lovelace");
        assert_eq!(read.rows[0].display_name.as_deref(), Some("Ada Lovelace"));
        assert_eq!(read.rows[0].group, None);
        assert_eq!(read.rows[1].line, 5);
        assert_eq!(
            read.rows[1].display_name.as_deref(),
            Some("Year 6, all pupils")
        );
        assert_eq!(read.rows[1].group.as_deref(), Some("year6"));
        assert_eq!(read.passwords[1].as_deref(), Some("sunflower22"));
        assert_eq!(read.rows[1].password_hash, None);
    }

    fn record(line: u64, fields: &[&str]) -> CsvRecord {
        CsvRecord {
            line,
            fields: fields.iter().map(|f| f.as_bytes().to_vec()).collect(),
        }
    }

    #[test]
    fn records_know_their_lines() {
        let text = b"a,b\r\n\r\n# note, with a comma\r\n\"x\r\ny\",\"say \"\"hi\"\"\"\r\nlast, \"q,r\" ,\n,\nend";
        assert_eq!(
            split_records(text).unwrap(),
            [
                record(1, &["a", "b"]),
                record(4, &["x\r\ny", "say \"hi\""]),
                record(6, &["last", "q,r ", ""]),
                record(7, &["", ""]),
                record(8, &["end"]),
            ]
        );
        let error = split_records(b"a,b\nok,\"open\nmore\n")
            .unwrap_err()
            .to_string();
        assert!(
            error.starts_with("line 2: a field in double quotes is not closed"),
            "{error}"
        );
        assert!(split_records(b"").unwrap().is_empty());
    }

    #[test]
    fn every_bad_row_is_reported_with_its_line() {
        let text = "user,role,permissions,password,password hash\n\
                    ada,staff,reports,correct horse,\n\
                    bob,staff,admin,correct horse,\n\
                    cat,pupil,,short,\n\
                    dan,pupil,,,\n\
                    eve,pupil,,correct horse,$argon2id$v=19$x\n\
                    fay,pupil,,correct horse,,extra\n\
                    gus,pupil,,,\"$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA\"\n";
        let read = read(text.as_bytes()).unwrap();
        let lines: Vec<u64> = read.bad_rows.iter().map(|b| b.line).collect();
        assert_eq!(lines, [3, 4, 5, 6, 7], "{:#?}", read.bad_rows);
        assert!(read.bad_rows[0].reason.contains("\"admin\""));
        assert!(read.bad_rows[1].reason.contains("too short"));
        assert!(read.bad_rows[2].reason.contains("no password"));
        assert!(read.bad_rows[3].reason.contains("not both"));
        assert!(read.bad_rows[4].reason.contains("6 fields"));
        // Every row is still handed on, so the database can report its problems too.
        assert_eq!(read.rows.len(), 7);
        assert!(read.rows[6].password_hash.is_some());
        assert_eq!(read.passwords[6], None);
    }

    #[test]
    fn bad_headers_are_refused() {
        for (text, expected) in [
            ("", "empty"),
            ("user,role,pasword\nada,staff,x\n", "\"pasword\""),
            ("user,password\nada,correct horse\n", "no \"role\" column"),
            (
                "user,role\nada,staff\n",
                "no \"password\" or \"password hash\"",
            ),
            ("user,role,password,Password\n", "appears twice"),
            ("user,role,password\n", "no users"),
        ] {
            let error = format!("{:#}", read(text.as_bytes()).err().unwrap());
            assert!(error.contains(expected), "{text:?}: {error}");
        }
    }

    #[test]
    fn hashes_come_back_in_order() {
        let passwords = ["first password", "second password", "third password"];
        let mut progress = Vec::new();
        let hashes = hash_all(&passwords, &mut progress).unwrap();
        assert_eq!(hashes.len(), 3);
        for (hash, password) in hashes.iter().zip(passwords) {
            assert!(password::verify_password(hash, password));
        }
        let progress = String::from_utf8(progress).unwrap();
        assert!(
            progress.starts_with("hashed 3 password(s) in "),
            "{progress}"
        );
    }
}
