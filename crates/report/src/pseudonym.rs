//! Stable pseudonyms for sharing a report beyond the safeguarding lead: keyed BLAKE2b
//! of the name, with a random key created once in `data_dir` (mode 0600) and never
//! written anywhere else. The same name gets the same pseudonym in every report made
//! with that key; without the key a pseudonym cannot be traced back (short of
//! guessing names and having the key).

use std::io::Write;
use std::path::{Path, PathBuf};

use blake2::Blake2bMac512;
use blake2::digest::{KeyInit, Mac};

use crate::ReportError;

/// The key file's name in `data_dir`.
pub const KEY_FILE: &str = "report-pseudonym.key";

/// Turns names into pseudonyms.
#[derive(Clone)]
pub struct Pseudonymiser {
    key: [u8; 32],
}

impl std::fmt::Debug for Pseudonymiser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pseudonymiser(..)")
    }
}

impl Pseudonymiser {
    /// Reads the key in `data_dir`, creating it (0600) on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<Self, ReportError> {
        let path: PathBuf = data_dir.join(KEY_FILE);
        let io = |source| ReportError::Key {
            path: path.display().to_string(),
            source,
        };
        match std::fs::read(&path) {
            Ok(bytes) if bytes.len() == 32 => {
                let mut key = [0u8; 32];
                key.copy_from_slice(&bytes);
                return Ok(Self { key });
            }
            Ok(_) => {
                return Err(io(std::io::Error::other(
                    "the key file is damaged (not 32 bytes); move it away to make a new one \
                     (earlier pseudonyms will not match)",
                )));
            }
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
            Err(error) => return Err(io(error)),
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key)
            .map_err(|e| io(std::io::Error::other(format!("no randomness: {e}"))))?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&path).map_err(io)?;
        file.write_all(&key).map_err(io)?;
        file.sync_all().map_err(io)?;
        Ok(Self { key })
    }

    /// A pseudonymiser with a given key (tests and benchmarks).
    pub fn with_key(key: [u8; 32]) -> Self {
        Self { key }
    }

    /// The pseudonym of a person's `name`: `P-` and 12 hex digits.
    pub fn pseudonym(&self, name: &str) -> String {
        self.keyed("P-", b"", name)
    }

    /// The pseudonym of a group's name: `G-` and 12 hex digits, unrelated to the
    /// pseudonym of a person of the same name.
    pub fn group_pseudonym(&self, name: &str) -> String {
        self.keyed("G-", b"group\0", name)
    }

    /// The pseudonym of a computer's name: `C-` and 12 hex digits.
    pub fn computer_pseudonym(&self, name: &str) -> String {
        self.keyed("C-", b"computer\0", name)
    }

    /// `prefix` and 12 hex digits of the keyed hash of `domain` and `name`.
    fn keyed(&self, prefix: &str, domain: &[u8], name: &str) -> String {
        let Ok(mut mac) = <Blake2bMac512 as KeyInit>::new_from_slice(&self.key) else {
            return format!("{prefix}????????????");
        };
        mac.update(domain);
        mac.update(name.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut text = String::from(prefix);
        for byte in digest.iter().take(6) {
            text.push_str(&format!("{byte:02x}"));
        }
        text
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn pseudonyms_are_stable_per_key_and_the_key_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let first = Pseudonymiser::load_or_create(dir.path()).unwrap();
        let again = Pseudonymiser::load_or_create(dir.path()).unwrap();
        assert_eq!(first.pseudonym("alice"), again.pseudonym("alice"));
        assert_ne!(first.pseudonym("alice"), first.pseudonym("bob"));
        assert!(first.pseudonym("alice").starts_with("P-"));
        assert_eq!(first.pseudonym("alice").len(), 14);
        let other = Pseudonymiser::with_key([7; 32]);
        assert_ne!(other.pseudonym("alice"), first.pseudonym("alice"));
        let group = first.group_pseudonym("alice");
        assert!(group.starts_with("G-") && group[2..] != first.pseudonym("alice")[2..]);
        assert!(first.computer_pseudonym("ICT-PC07").starts_with("C-"));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
