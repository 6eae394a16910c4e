//! Checking a download against the checksum list its publisher puts beside it (UT1's
//! `MD5SUM.LST`, a `SHA256SUMS`, a `list.txt.sha256`): `md5sum` / `sha256sum` output,
//! one `HEX  NAME` line per file (`*NAME` for binary mode), or one bare hash.
//!
//! The line for the download is the one naming the last segment of the feed's URL; a
//! list holding one bare hash (no file name) is taken to be for it. MD5 (32
//! hex digits) only proves the file is whole, as UT1 intends; SHA-256 (64) also that it
//! is the one published beside the list.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use md5::Md5;
use sha2::{Digest, Sha256};

/// Why a download does not match its checksum list.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ChecksumError {
    /// The checksum list names other files only (or holds several bare hashes).
    #[error("the checksum list has no line for {0}")]
    NotListed(String),
    /// The hash is neither 32 (MD5) nor 64 (SHA-256) hex digits.
    #[error("the checksum list's hash for {name} is not an MD5 or SHA-256 hash: {hash:?}")]
    Unreadable {
        /// The file name.
        name: String,
        /// The hash text, cut to 80 characters.
        hash: String,
    },
    /// The download's hash differs from the published one.
    #[error(
        "the download's {algorithm} is {actual}, but the checksum list says {expected}: it is incomplete or not the published file"
    )]
    Mismatch {
        /// `MD5` or `SHA-256`.
        algorithm: &'static str,
        /// The published hash (lower case).
        expected: String,
        /// The download's hash.
        actual: String,
    },
}

/// The published hash for `name` in checksum list `text`, lower-cased.
pub fn published_hash(text: &str, name: &str) -> Result<String, ChecksumError> {
    let mut entries = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(|line| match line.split_once(char::is_whitespace) {
            Some((hash, file)) => (hash, Some(file.trim_start().trim_start_matches('*'))),
            None => (line, None),
        });
    let all: Vec<(&str, Option<&str>)> = entries.by_ref().collect();
    let named = all.iter().find(|(_, file)| {
        file.is_some_and(|file| file == name || file.rsplit('/').next() == Some(name))
    });
    let hash = match (named, all.as_slice()) {
        (Some((hash, _)), _) => *hash,
        (None, [(hash, None)]) => *hash,
        _ => return Err(ChecksumError::NotListed(name.to_owned())),
    };
    let readable = matches!(hash.len(), 32 | 64) && hash.bytes().all(|b| b.is_ascii_hexdigit());
    if !readable {
        return Err(ChecksumError::Unreadable {
            name: name.to_owned(),
            hash: hash.chars().take(80).collect(),
        });
    }
    Ok(hash.to_ascii_lowercase())
}

/// Checks the file at `path` against `expected` (32 hex digits: MD5; 64: SHA-256).
pub fn verify_file(path: &Path, expected: &str) -> io::Result<Result<(), ChecksumError>> {
    let (algorithm, actual) = if expected.len() == 32 {
        ("MD5", hex(&digest_file::<Md5>(path)?))
    } else {
        ("SHA-256", hex(&digest_file::<Sha256>(path)?))
    };
    Ok(if actual == expected {
        Ok(())
    } else {
        Err(ChecksumError::Mismatch {
            algorithm,
            expected: expected.to_owned(),
            actual,
        })
    })
}

fn digest_file<D: Digest>(path: &Path) -> io::Result<Vec<u8>> {
    let mut file = File::open(path)?;
    let mut hasher = D::new();
    let mut buffer = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buffer)?;
        if n == 0 {
            return Ok(hasher.finalize().to_vec());
        }
        hasher.update(&buffer[..n]);
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const UT1_STYLE: &str = "\
6f5902ac237024bdd0c176cb93063dc4  adult.tar.gz
D41D8CD98F00B204E9800998ECF8427E  blacklists.tar.gz
";

    #[test]
    fn the_line_naming_the_file_is_used() {
        assert_eq!(
            published_hash(UT1_STYLE, "blacklists.tar.gz").unwrap(),
            "d41d8cd98f00b204e9800998ecf8427e"
        );
        assert_eq!(
            published_hash("abc *sub/list.txt\n", "list.txt").unwrap_err(),
            ChecksumError::Unreadable {
                name: "list.txt".into(),
                hash: "abc".into()
            }
        );
        for (list, name) in [
            (UT1_STYLE, "other.tar.gz"),
            ("d41d8cd98f00b204e9800998ecf8427e  a\n", "b"),
        ] {
            assert!(matches!(
                published_hash(list, name),
                Err(ChecksumError::NotListed(_))
            ));
        }
        let bare = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n";
        assert_eq!(published_hash(bare, "x").unwrap(), bare.trim());
    }

    #[test]
    fn files_are_checked_with_md5_or_sha256() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("empty");
        std::fs::write(&empty, "").unwrap();
        assert_eq!(
            verify_file(&empty, "d41d8cd98f00b204e9800998ecf8427e").unwrap(),
            Ok(())
        );
        let sha = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";
        assert_eq!(verify_file(&empty, sha).unwrap(), Ok(()));
        std::fs::write(&empty, "x").unwrap();
        assert!(matches!(
            verify_file(&empty, sha).unwrap(),
            Err(ChecksumError::Mismatch {
                algorithm: "SHA-256",
                ..
            })
        ));
    }
}
