//! The audit log: who changed the filtering policy, alert statuses and unblocks, and
//! who looked at one person's browsing history. Append-only and hash-chained, so an
//! altered, removed or reordered entry is detected by [`Store::verify_audit`].
//!
//! # Layout
//!
//! One sled tree, `audit`:
//!
//! | key                      | value                                                       |
//! |--------------------------|-------------------------------------------------------------|
//! | `E` + sequence (u64 BE)  | [`AUDIT_FORMAT`] (1 byte), postcard [`AuditEntry`], BLAKE2b-256 hash (32 bytes) |
//! | `H`                      | the chain head: last sequence (u64 BE) and its hash (32 bytes) |
//! | `P`                      | the policy file's text when its last change was audited (UTF-8) |
//! | `L` + path (UTF-8)       | a list file's BLAKE2b-256 fingerprint, line count (u64 BE), 1 and its text (up to [`LIST_COPY_LIMIT`] bytes of UTF-8) or 0 |
//!
//! Sequences start at 1 and have no gaps. An entry's hash is BLAKE2b-256 over the
//! previous entry's hash (32 zero bytes for the first) followed by the entry's format
//! byte and postcard bytes; the entry also carries the previous hash, so each entry
//! names its predecessor. An entry and the new head are written in one sled
//! transaction, so concurrent appends (the service and a command-line tool) serialise.
//!
//! What the chain cannot show on its own is the removal of the newest entries together
//! with a rewritten head. So every append logs the new head (sequence and hash) to the
//! service's log, `safegate audit verify` prints it, and a head noted outside the
//! database (the log, a printout) is checked by [`Store::verify_audit_against`]: the
//! chain must still hold that entry with that hash.

use blake2::Blake2b;
use blake2::digest::Digest;
use blake2::digest::consts::U32;
use serde::{Deserialize, Serialize};
use sled::transaction::{ConflictableTransactionError, TransactionError};

use crate::{Store, StoreError};

/// The stored entry format written by [`Store::append_audit`].
pub const AUDIT_FORMAT: u8 = 1;

const ENTRY: u8 = b'E';
const HEAD: &[u8] = b"H";
/// The policy file's text as of its last audited change.
const POLICY_TEXT: &[u8] = b"P";
/// Key prefix of the list-file records: fingerprint, line count and (small files) text.
const LIST_FILE: u8 = b'L';
/// List files up to this size keep a copy, so their changes are audited as a diff.
pub const LIST_COPY_LIMIT: usize = 1024 * 1024;

/// What an audit transaction appends (an entry) and records (a new value), if anything.
type AuditDecision = (Option<NewAuditEntry>, Option<Vec<u8>>);
const HASH_LEN: usize = 32;

/// A BLAKE2b-256 hash linking audit entries.
pub type AuditHash = [u8; HASH_LEN];

/// A chain head noted outside the database (logged at every append, printed by
/// `safegate audit verify`): the chain must still contain this entry with this hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotedHead {
    /// The entry's sequence number.
    pub sequence: u64,
    /// The entry's hash.
    pub hash: AuditHash,
}

impl NotedHead {
    /// Reads a head as `safegate audit verify` prints it (`#12 ab01…`), or `12:ab01…`.
    pub fn parse(text: &str) -> Option<NotedHead> {
        let text = text.trim().trim_start_matches("head:").trim();
        let text = text.strip_prefix('#').unwrap_or(text);
        let (sequence, hash) = text.split_once([':', ' '])?;
        let sequence = sequence.trim().parse().ok()?;
        let hash = hash.trim();
        if hash.len() != HASH_LEN * 2 || !hash.is_ascii() {
            return None;
        }
        let mut bytes = [0u8; HASH_LEN];
        for (byte, pair) in bytes.iter_mut().zip(hash.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).ok()?;
            *byte = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(NotedHead {
            sequence,
            hash: bytes,
        })
    }
}

/// Lower-case hex of an audit hash, as printed and logged.
pub fn audit_hash_hex(hash: &AuditHash) -> String {
    hash.iter()
        .fold(String::with_capacity(HASH_LEN * 2), |mut out, byte| {
            use std::fmt::Write as _;
            let _ = write!(out, "{byte:02x}");
            out
        })
}

/// What kind of action an audit entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AuditAction {
    /// The filtering policy changed (through the admin interface, or by hand: actor
    /// `file`).
    PolicyChange,
    /// A temporary unblock was granted or ended.
    Unblock,
    /// A review request from a block page was approved or rejected.
    ReviewDecision,
    /// An alert was acknowledged, closed or reopened.
    AlertStatus,
    /// Someone viewed one person's browsing history (searches, visits, blocks).
    HistoryViewed,
    /// A user account was added, changed or removed.
    UserChange,
}

impl AuditAction {
    /// The action's name as shown and exported (`policy-change`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PolicyChange => "policy-change",
            Self::Unblock => "unblock",
            Self::ReviewDecision => "review-decision",
            Self::AlertStatus => "alert-status",
            Self::HistoryViewed => "history-viewed",
            Self::UserChange => "user-change",
        }
    }
}

/// What is being recorded, before it gets its place in the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewAuditEntry {
    /// When, Unix microseconds.
    pub at_unix_micros: u64,
    /// Who: a user name, or `file` for hand edits of the policy file, or `cli`.
    pub actor: String,
    /// What kind of action.
    pub action: AuditAction,
    /// What it was done to: a user, an alert id, a site, `policy`.
    pub subject: String,
    /// What changed (a diff for policy changes, the new status and note for alerts).
    pub detail: String,
    /// Why, when the person gave a reason.
    pub reason: Option<String>,
}

/// One entry of the audit log, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuditEntry {
    /// Position in the chain, from 1, without gaps.
    pub sequence: u64,
    /// When, Unix microseconds.
    pub at_unix_micros: u64,
    /// Who.
    pub actor: String,
    /// What kind of action.
    pub action: AuditAction,
    /// What it was done to.
    pub subject: String,
    /// What changed.
    pub detail: String,
    /// Why, when given.
    pub reason: Option<String>,
    /// The hash of the previous entry (zeros for the first).
    pub previous_hash: AuditHash,
}

/// The result of checking the whole chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuditVerification {
    /// Every entry is intact and in order.
    Intact {
        /// Entries checked.
        entries: u64,
        /// The last entry's hash (zeros when the log is empty).
        head_hash: AuditHash,
    },
    /// The chain is broken at `sequence`.
    Broken {
        /// The first entry (or expected entry) that fails.
        sequence: u64,
        /// What is wrong there.
        reason: String,
    },
}

fn hash_entry(previous: &AuditHash, stored: &[u8]) -> AuditHash {
    let mut hasher = Blake2b::<U32>::new();
    hasher.update(previous);
    hasher.update(stored);
    hasher.finalize().into()
}

fn entry_key(sequence: u64) -> [u8; 9] {
    let mut key = [0u8; 9];
    key[0] = ENTRY;
    key[1..].copy_from_slice(&sequence.to_be_bytes());
    key
}

/// Reads a head value: last sequence and hash.
fn parse_head(value: &[u8]) -> Option<(u64, AuditHash)> {
    let (sequence, hash) = value.split_first_chunk::<8>()?;
    Some((
        u64::from_be_bytes(*sequence),
        AuditHash::try_from(hash).ok()?,
    ))
}

/// Splits a stored entry into its hashed part and the stored hash.
fn split_stored(value: &[u8]) -> Option<(&[u8], AuditHash)> {
    let (body, hash) = value.split_last_chunk::<HASH_LEN>()?;
    Some((body, *hash))
}

fn decode_body(body: &[u8]) -> Result<AuditEntry, String> {
    match body.split_first() {
        Some((&AUDIT_FORMAT, rest)) => {
            postcard::from_bytes(rest).map_err(|err| format!("cannot decode the entry: {err}"))
        }
        Some((other, _)) => Err(format!("unknown entry format {other}")),
        None => Err("empty entry".to_owned()),
    }
}

impl Store {
    fn audit_tree(&self) -> Result<sled::Tree, StoreError> {
        Ok(self.trees()?.db.open_tree("audit")?)
    }

    /// Appends an entry to the audit log and flushes it to disk before returning (an
    /// audited action must not be lost by a crash). Returns the stored entry.
    pub fn append_audit(&self, new: NewAuditEntry) -> Result<AuditEntry, StoreError> {
        let appended = self.audit_transaction(POLICY_TEXT, |_| Ok((Some(new.clone()), None)))?;
        appended.ok_or_else(|| StoreError::DamagedAudit("the entry was not appended".to_owned()))
    }

    /// Records a change of the policy file's text: when `text` differs from the text
    /// recorded last time, appends an `action` entry (a policy change, or an unblock
    /// made through the policy) by `actor` whose detail is `diff(previous, text)`
    /// (previous is empty the first time) and remembers `text`, in one transaction.
    /// None when nothing changed.
    pub fn audit_policy_text(
        &self,
        at_unix_micros: u64,
        actor: &str,
        action: AuditAction,
        reason: Option<&str>,
        text: &str,
        diff: impl Fn(&str, &str) -> String,
    ) -> Result<Option<AuditEntry>, StoreError> {
        self.audit_transaction(POLICY_TEXT, |previous_text| {
            let previous = previous_text
                .map(|value| String::from_utf8_lossy(value).into_owned())
                .unwrap_or_default();
            if previous == text {
                return Ok((None, None));
            }
            let entry = NewAuditEntry {
                at_unix_micros,
                actor: actor.to_owned(),
                action,
                subject: "policy".to_owned(),
                detail: diff(&previous, text),
                reason: reason.map(str::to_owned),
            };
            Ok((Some(entry), Some(text.as_bytes().to_vec())))
        })
    }

    /// Records a change of a list file the policy names (a category source, a phrase
    /// list), by its path: the first time a file is seen only its fingerprint is
    /// remembered (adding it to the policy was audited as a policy change); when
    /// `content` differs from the last recorded content, appends a `policy-change`
    /// entry by `file` whose detail is `diff(previous, now)` for files up to
    /// [`LIST_COPY_LIMIT`] bytes, or the line counts for larger ones (no copy is
    /// kept of those). None when nothing was appended.
    pub fn audit_list_file(
        &self,
        at_unix_micros: u64,
        path: &str,
        content: &[u8],
        diff: impl Fn(&str, &str) -> String,
    ) -> Result<Option<AuditEntry>, StoreError> {
        let mut key = vec![LIST_FILE];
        key.extend_from_slice(path.as_bytes());
        let fingerprint: AuditHash = Blake2b::<U32>::digest(content).into();
        let lines = content.iter().filter(|&&b| b == b'\n').count() as u64;
        let copy = (content.len() <= LIST_COPY_LIMIT)
            .then(|| std::str::from_utf8(content).ok())
            .flatten();
        let mut record = Vec::with_capacity(HASH_LEN + 8 + copy.map_or(0, str::len));
        record.extend_from_slice(&fingerprint);
        record.extend_from_slice(&lines.to_be_bytes());
        record.push(u8::from(copy.is_some()));
        if let Some(text) = copy {
            record.extend_from_slice(text.as_bytes());
        }
        self.audit_transaction(&key, |previous| {
            let Some(previous) = previous else {
                return Ok((None, Some(record.clone())));
            };
            let (old_fingerprint, rest) = previous
                .split_first_chunk::<HASH_LEN>()
                .ok_or_else(|| StoreError::DamagedAudit(format!("list record of {path}")))?;
            if *old_fingerprint == fingerprint {
                return Ok((None, None));
            }
            let (old_lines, old_text) = rest
                .split_first_chunk::<8>()
                .ok_or_else(|| StoreError::DamagedAudit(format!("list record of {path}")))?;
            let old_lines = u64::from_be_bytes(*old_lines);
            let old_copy = match old_text.split_first() {
                Some((1, text)) => std::str::from_utf8(text).ok(),
                _ => None,
            };
            let detail = match (old_copy, copy) {
                (Some(old), Some(new)) => diff(old, new),
                _ => format!(
                    "{path}: {old_lines} lines before, {lines} now (too large to keep a copy for a diff)"
                ),
            };
            let entry = NewAuditEntry {
                at_unix_micros,
                actor: "file".to_owned(),
                action: AuditAction::PolicyChange,
                subject: format!("list {path}"),
                detail,
                reason: None,
            };
            Ok((Some(entry), Some(record.clone())))
        })
    }

    /// The policy text recorded by the last [`Store::audit_policy_text`] change.
    pub fn audited_policy_text(&self) -> Result<Option<String>, StoreError> {
        Ok(self
            .audit_tree()?
            .get(POLICY_TEXT)?
            .map(|value| String::from_utf8_lossy(&value).into_owned()))
    }

    /// Runs `decide` on the value recorded under `record_key` inside a transaction;
    /// stores the new value it returns, if any, and appends the entry it returns, if
    /// any, atomically; then flushes.
    fn audit_transaction(
        &self,
        record_key: &[u8],
        decide: impl Fn(Option<&[u8]>) -> Result<AuditDecision, StoreError>,
    ) -> Result<Option<AuditEntry>, StoreError> {
        let tree = self.audit_tree()?;
        let appended = tree.transaction(|tx| {
            let recorded = tx.get(record_key)?;
            let (new, new_record) =
                decide(recorded.as_deref()).map_err(ConflictableTransactionError::Abort)?;
            if let Some(value) = new_record {
                tx.insert(record_key, value)?;
            }
            let Some(new) = new else {
                return Ok(None);
            };
            let (last, previous_hash) = match tx.get(HEAD)? {
                Some(value) => parse_head(&value).ok_or_else(|| {
                    ConflictableTransactionError::Abort(StoreError::DamagedAudit(
                        "the chain head is damaged".to_owned(),
                    ))
                })?,
                None => (0, [0u8; HASH_LEN]),
            };
            let entry = AuditEntry {
                sequence: last + 1,
                at_unix_micros: new.at_unix_micros,
                actor: new.actor,
                action: new.action,
                subject: new.subject,
                detail: new.detail,
                reason: new.reason,
                previous_hash,
            };
            let mut stored = vec![AUDIT_FORMAT];
            stored = postcard::to_extend(&entry, stored)
                .map_err(|err| ConflictableTransactionError::Abort(StoreError::from(err)))?;
            let hash = hash_entry(&previous_hash, &stored);
            stored.extend_from_slice(&hash);
            let mut head = Vec::with_capacity(8 + HASH_LEN);
            head.extend_from_slice(&entry.sequence.to_be_bytes());
            head.extend_from_slice(&hash);
            tx.insert(&entry_key(entry.sequence), stored)?;
            tx.insert(HEAD, head)?;
            Ok(Some((entry, hash)))
        });
        let appended = match appended {
            Ok(appended) => appended,
            Err(TransactionError::Abort(err)) => return Err(err),
            Err(TransactionError::Storage(err)) => return Err(err.into()),
        };
        let Some((entry, hash)) = appended else {
            return Ok(None);
        };
        tree.flush()?;
        tracing::info!(
            sequence = entry.sequence,
            head = %audit_hash_hex(&hash),
            actor = %entry.actor,
            action = entry.action.as_str(),
            "audit entry appended (the head, to compare with `safegate audit verify --noted-head`)"
        );
        Ok(Some(entry))
    }

    /// Audit entries from `since_sequence` (inclusive), oldest first, at most
    /// `limit`. An entry that cannot be decoded is an error (the log is evidence).
    pub fn audit_entries(
        &self,
        since_sequence: u64,
        limit: usize,
    ) -> Result<Vec<AuditEntry>, StoreError> {
        let tree = self.audit_tree()?;
        let mut entries = Vec::new();
        for item in tree.range(entry_key(since_sequence)..).take(limit) {
            let (key, value) = item?;
            if key.first() != Some(&ENTRY) {
                break;
            }
            let (body, _) = split_stored(&value)
                .ok_or_else(|| StoreError::DamagedAudit("an entry is truncated".to_owned()))?;
            entries.push(decode_body(body).map_err(StoreError::DamagedAudit)?);
        }
        Ok(entries)
    }

    /// Checks the whole chain: sequences without gaps, each entry's stored hash and
    /// link to its predecessor, and the head. Reports the first break.
    pub fn verify_audit(&self) -> Result<AuditVerification, StoreError> {
        self.verify_audit_against(None)
    }

    /// [`Store::verify_audit`], and when a head was noted earlier, that the chain
    /// still holds that entry with that hash: removing the newest entries and
    /// rewriting the head cannot hide from a noted head.
    pub fn verify_audit_against(
        &self,
        noted: Option<NotedHead>,
    ) -> Result<AuditVerification, StoreError> {
        let tree = self.audit_tree()?;
        let mut hash_at_noted = None;
        let mut expected_sequence = 1u64;
        let mut previous = [0u8; HASH_LEN];
        let broken = |sequence: u64, reason: &str| {
            Ok(AuditVerification::Broken {
                sequence,
                reason: reason.to_owned(),
            })
        };
        for item in tree.scan_prefix([ENTRY]) {
            let (key, value) = item?;
            let sequence = key
                .get(1..)
                .and_then(|k| <[u8; 8]>::try_from(k).ok())
                .map_or(0, u64::from_be_bytes);
            if sequence != expected_sequence {
                return broken(
                    expected_sequence,
                    &format!("entry {expected_sequence} is missing (next found: {sequence})"),
                );
            }
            let Some((body, stored_hash)) = split_stored(&value) else {
                return broken(sequence, "the entry is truncated");
            };
            if hash_entry(&previous, body) != stored_hash {
                return broken(sequence, "the entry was altered (its hash does not match)");
            }
            let entry = match decode_body(body) {
                Ok(entry) => entry,
                Err(reason) => return broken(sequence, &reason),
            };
            if entry.sequence != sequence {
                return broken(sequence, "the entry was moved (its sequence differs)");
            }
            if entry.previous_hash != previous {
                return broken(sequence, "the entry does not follow its predecessor");
            }
            previous = stored_hash;
            if noted.is_some_and(|noted| noted.sequence == sequence) {
                hash_at_noted = Some(stored_hash);
            }
            expected_sequence += 1;
        }
        let entries = expected_sequence - 1;
        let head = tree.get(HEAD)?;
        match (head.as_deref().map(parse_head), entries) {
            (None, 0) => {}
            (Some(Some((sequence, hash))), _) if sequence == entries && hash == previous => {}
            (Some(Some((sequence, _))), _) if sequence > entries => {
                return broken(
                    entries + 1,
                    &format!("entries {} to {sequence} were removed", entries + 1),
                );
            }
            _ => return broken(entries, "the chain head does not match the last entry"),
        }
        if let Some(noted) = noted.filter(|noted| noted.sequence > 0) {
            match hash_at_noted {
                None => {
                    return broken(
                        entries + 1,
                        &format!(
                            "the noted head #{} is gone: entries {} to {} were removed",
                            noted.sequence,
                            entries + 1,
                            noted.sequence
                        ),
                    );
                }
                Some(hash) if hash != noted.hash => {
                    return broken(
                        noted.sequence,
                        &format!(
                            "entry #{} differs from the noted head: the log was rewritten from there",
                            noted.sequence
                        ),
                    );
                }
                Some(_) => {}
            }
        }
        Ok(AuditVerification::Intact {
            entries,
            head_hash: previous,
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn entry(n: u64) -> NewAuditEntry {
        NewAuditEntry {
            at_unix_micros: 1_700_000_000_000_000 + n,
            actor: "head.teacher".into(),
            action: AuditAction::HistoryViewed,
            subject: format!("pupil{n}"),
            detail: "searches 2026-11-16..2026-11-23".into(),
            reason: Some("safeguarding concern".into()),
        }
    }

    fn store_with(n: u64) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        for i in 1..=n {
            let stored = store.append_audit(entry(i)).unwrap();
            assert_eq!(stored.sequence, i);
        }
        (dir, store)
    }

    #[test]
    fn empty_and_appended_chains_verify() {
        let (_dir, store) = store_with(0);
        assert_eq!(
            store.verify_audit().unwrap(),
            AuditVerification::Intact {
                entries: 0,
                head_hash: [0; 32]
            }
        );
        let (_dir, store) = store_with(5);
        assert!(matches!(
            store.verify_audit().unwrap(),
            AuditVerification::Intact { entries: 5, .. }
        ));
        let entries = store.audit_entries(2, 2).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.sequence).collect::<Vec<_>>(),
            [2, 3]
        );
        assert_eq!(entries[0].subject, "pupil2");
    }

    #[test]
    fn an_altered_entry_is_detected() {
        let (_dir, store) = store_with(4);
        let tree = store.audit_tree().unwrap();
        let key = entry_key(2);
        let mut value = tree.get(key).unwrap().unwrap().to_vec();
        // Change one byte of the subject ("pupil2" → "pupil3").
        let at = value.windows(6).position(|w| w == b"pupil2").unwrap();
        value[at + 5] = b'3';
        tree.insert(key, value).unwrap();
        assert!(matches!(
            store.verify_audit().unwrap(),
            AuditVerification::Broken { sequence: 2, .. }
        ));
    }

    #[test]
    fn a_rehashed_entry_breaks_the_next_link() {
        let (_dir, store) = store_with(3);
        let tree = store.audit_tree().unwrap();
        let value = tree.get(entry_key(2)).unwrap().unwrap();
        let (body, _) = split_stored(&value).unwrap();
        let mut entry = decode_body(body).unwrap();
        entry.detail = "nothing to see".into();
        let mut stored = postcard::to_extend(&entry, vec![AUDIT_FORMAT]).unwrap();
        let hash = hash_entry(&entry.previous_hash, &stored);
        stored.extend_from_slice(&hash);
        tree.insert(entry_key(2), stored).unwrap();
        assert!(matches!(
            store.verify_audit().unwrap(),
            AuditVerification::Broken { sequence: 3, .. }
        ));
    }

    #[test]
    fn removed_entries_are_detected() {
        let (_dir, store) = store_with(4);
        let tree = store.audit_tree().unwrap();
        tree.remove(entry_key(2)).unwrap();
        assert!(matches!(
            store.verify_audit().unwrap(),
            AuditVerification::Broken { sequence: 2, .. }
        ));
        let (_dir, store) = store_with(4);
        let tree = store.audit_tree().unwrap();
        tree.remove(entry_key(4)).unwrap();
        assert!(matches!(
            store.verify_audit().unwrap(),
            AuditVerification::Broken { sequence: 4, .. }
        ));
    }

    #[test]
    fn a_cut_back_chain_with_a_rewritten_head_fails_against_the_noted_head() {
        let (_dir, store) = store_with(4);
        let AuditVerification::Intact { head_hash, .. } = store.verify_audit().unwrap() else {
            panic!("intact")
        };
        let printed = format!("head: #4 {}", audit_hash_hex(&head_hash));
        let noted = NotedHead::parse(&printed).unwrap();
        assert_eq!(
            noted,
            NotedHead::parse(&format!("4:{}", audit_hash_hex(&head_hash))).unwrap()
        );
        assert!(matches!(
            store.verify_audit_against(Some(noted)).unwrap(),
            AuditVerification::Intact { entries: 4, .. }
        ));
        store.append_audit(entry(5)).unwrap();
        assert!(matches!(
            store.verify_audit_against(Some(noted)).unwrap(),
            AuditVerification::Intact { entries: 5, .. }
        ));

        // Entries 4 and 5 removed, the head rewritten to entry 3: the chain alone is
        // intact, the noted head is not there any more.
        let tree = store.audit_tree().unwrap();
        let third = tree.get(entry_key(3)).unwrap().unwrap();
        let (_, third_hash) = split_stored(&third).unwrap();
        tree.remove(entry_key(5)).unwrap();
        tree.remove(entry_key(4)).unwrap();
        let mut head = 3u64.to_be_bytes().to_vec();
        head.extend_from_slice(&third_hash);
        tree.insert(HEAD, head).unwrap();
        assert!(matches!(
            store.verify_audit().unwrap(),
            AuditVerification::Intact { entries: 3, .. }
        ));
        assert!(matches!(
            store.verify_audit_against(Some(noted)).unwrap(),
            AuditVerification::Broken { sequence: 4, .. }
        ));

        // Rewritten from entry 4 on: same length, another hash.
        store.append_audit(entry(40)).unwrap();
        let AuditVerification::Broken { sequence, reason } =
            store.verify_audit_against(Some(noted)).unwrap()
        else {
            panic!("a rewritten entry 4 must not verify against the noted head")
        };
        assert_eq!(sequence, 4, "{reason}");
    }

    #[test]
    fn noted_heads_parse_strictly() {
        let hash = "ab".repeat(32);
        assert_eq!(
            NotedHead::parse(&format!("#7 {hash}")).map(|n| n.sequence),
            Some(7)
        );
        assert_eq!(
            NotedHead::parse(&format!("7:{hash}")).map(|n| n.hash[0]),
            Some(0xab)
        );
        assert_eq!(NotedHead::parse("7:abab"), None);
        assert_eq!(NotedHead::parse(&format!("x:{hash}")), None);
        assert_eq!(NotedHead::parse(&format!("7:{}", "zz".repeat(32))), None);
        assert_eq!(NotedHead::parse(&format!("7:{}", "é".repeat(32))), None);
    }

    #[test]
    fn list_file_changes_are_audited_after_the_first_sighting() {
        let (_dir, store) = store_with(0);
        let diff = |old: &str, new: &str| format!("-{old}+{new}");
        let path = "lists/allow.txt";
        assert_eq!(
            store.audit_list_file(1, path, b"a.test\n", diff).unwrap(),
            None
        );
        assert_eq!(
            store.audit_list_file(2, path, b"a.test\n", diff).unwrap(),
            None
        );
        let changed = store
            .audit_list_file(3, path, b"a.test\nb.test\n", diff)
            .unwrap()
            .unwrap();
        assert_eq!(changed.subject, "list lists/allow.txt");
        assert_eq!(changed.actor, "file");
        assert_eq!(changed.action, AuditAction::PolicyChange);
        assert_eq!(changed.detail, "-a.test\n+a.test\nb.test\n");

        // Too large for a copy: the line counts, then a diff again once it is small.
        let big = "x.test\n".repeat(LIST_COPY_LIMIT / 7 + 1);
        let entry = store
            .audit_list_file(4, path, big.as_bytes(), diff)
            .unwrap()
            .unwrap();
        assert!(
            entry.detail.contains("2 lines before, 149797 now"),
            "{}",
            entry.detail
        );
        let entry = store
            .audit_list_file(5, path, b"c.test\n", diff)
            .unwrap()
            .unwrap();
        assert!(
            entry.detail.contains("149797 lines before, 1 now"),
            "{}",
            entry.detail
        );
        let entry = store
            .audit_list_file(6, path, b"d.test\n", diff)
            .unwrap()
            .unwrap();
        assert_eq!(entry.detail, "-c.test\n+d.test\n");
        // Other files and the policy text are recorded separately.
        assert_eq!(
            store
                .audit_list_file(7, "other.txt", b"d.test\n", diff)
                .unwrap(),
            None
        );
        assert!(matches!(
            store.verify_audit().unwrap(),
            AuditVerification::Intact { entries: 4, .. }
        ));
        assert_eq!(store.audited_policy_text().unwrap(), None);
    }

    #[test]
    fn policy_text_changes_are_recorded_once_with_their_diff() {
        let (_dir, store) = store_with(1);
        let diff = |old: &str, new: &str| format!("-{old}+{new}");
        let first = store
            .audit_policy_text(5, "file", AuditAction::PolicyChange, None, "a = 1\n", diff)
            .unwrap()
            .unwrap();
        assert_eq!((first.sequence, first.detail.as_str()), (2, "-+a = 1\n"));
        assert_eq!(
            store
                .audit_policy_text(6, "file", AuditAction::PolicyChange, None, "a = 1\n", diff)
                .unwrap(),
            None
        );
        let second = store
            .audit_policy_text(
                7,
                "filter.admin",
                AuditAction::Unblock,
                Some("year 9 lesson"),
                "a = 2\n",
                diff,
            )
            .unwrap()
            .unwrap();
        assert_eq!(second.detail, "-a = 1\n+a = 2\n");
        assert_eq!(second.reason.as_deref(), Some("year 9 lesson"));
        assert_eq!(second.action, AuditAction::Unblock);
        assert_eq!(
            store.audited_policy_text().unwrap().as_deref(),
            Some("a = 2\n")
        );
        assert!(matches!(
            store.verify_audit().unwrap(),
            AuditVerification::Intact { entries: 3, .. }
        ));
    }

    #[test]
    fn appends_from_many_threads_form_one_chain() {
        let (_dir, store) = store_with(0);
        std::thread::scope(|scope| {
            for t in 0..4 {
                let store = store.clone();
                scope.spawn(move || {
                    for i in 0..10 {
                        store.append_audit(entry(t * 100 + i)).unwrap();
                    }
                });
            }
        });
        assert!(matches!(
            store.verify_audit().unwrap(),
            AuditVerification::Intact { entries: 40, .. }
        ));
    }
}
