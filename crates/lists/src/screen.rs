//! Screening a freshly read list before it goes live, so that a list file replaced
//! by garbage (a failed download, a disk error, a wrong file copied over it) cannot
//! silently weaken the filter. A list is refused when
//! - it holds binary data (NUL or other control bytes, see [`Entries::binary`]);
//! - more than half of its lines (comments and blank lines aside) are not valid
//!   domains, hosts-file lines, URLs or expressions;
//! - it has fewer than `100 - max_shrink_percent` % of the entries of the same list
//!   in force until now (only when there is one: at first start nothing is compared).
//!
//! Screening is a pure function of the entries read and the previous count; the
//! caller (the policy compile) keeps the previous policy in force when a list is
//! refused.

use crate::Entries;

/// Default for [`ListChecks::max_shrink_percent`].
pub const DEFAULT_MAX_SHRINK_PERCENT: u8 = 50;

/// How much a list may change from one load to the next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListChecks {
    /// A list that loses more than this share of its entries (in percent of the
    /// previous count) is refused; 100 turns the check off.
    pub max_shrink_percent: u8,
}

impl Default for ListChecks {
    fn default() -> Self {
        ListChecks {
            max_shrink_percent: DEFAULT_MAX_SHRINK_PERCENT,
        }
    }
}

/// Why a list was refused, in words a technician can act on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// The file holds binary data.
    #[error("{0}")]
    Binary(String),
    /// Most lines are not list entries.
    #[error("{invalid} of its {lines} lines are not valid list entries (more than half)")]
    MostlyInvalid {
        /// Lines skipped as invalid.
        invalid: usize,
        /// Lines read (comments and blank lines aside).
        lines: usize,
    },
    /// The list lost more entries than allowed since the list in force.
    #[error(
        "it shrank from {before} to {after} entries, more than the {max_percent} % that \
         lists.max_shrink_percent allows"
    )]
    Shrunk {
        /// Entries of the list in force.
        before: usize,
        /// Entries read now.
        after: usize,
        /// The configured limit.
        max_percent: u8,
    },
}

/// Screens `entries` (see the module documentation); `previous` is the entry count of
/// the same list in force, if there is one.
pub fn screen(
    entries: &Entries,
    previous: Option<usize>,
    checks: ListChecks,
) -> Result<(), Refusal> {
    if let Some(binary) = &entries.binary {
        return Err(Refusal::Binary(binary.clone()));
    }
    let invalid = entries.skipped.len();
    let lines = entries.len() + invalid;
    if invalid * 2 > lines {
        return Err(Refusal::MostlyInvalid { invalid, lines });
    }
    let after = entries.len();
    if let Some(before) = previous {
        let kept_percent = 100 - usize::from(checks.max_shrink_percent.min(100));
        if after * 100 < before * kept_percent {
            return Err(Refusal::Shrunk {
                before,
                after,
                max_percent: checks.max_shrink_percent,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::path::Path;

    use super::*;
    use crate::ListFormat;
    use crate::source::{parse_domains, read};

    fn domains(text: &str) -> Entries {
        let mut entries = Entries::default();
        parse_domains(text, Path::new("t.txt"), &mut entries);
        entries
    }

    #[test]
    fn a_good_list_passes_and_may_grow_or_shrink_a_little() {
        let list = domains("# header\nbet365.com\nbet.com\n\nwilliamhill.com\nbad word\n");
        let checks = ListChecks::default();
        assert_eq!(screen(&list, None, checks), Ok(()));
        assert_eq!(screen(&list, Some(3), checks), Ok(()));
        assert_eq!(
            screen(&list, Some(6), checks),
            Ok(()),
            "half kept is allowed"
        );
        assert_eq!(screen(&list, Some(1), checks), Ok(()));
    }

    #[test]
    fn a_list_cut_below_the_share_is_refused_and_100_turns_the_check_off() {
        let list = domains("a.com\nb.com\n");
        let refusal = screen(&list, Some(20), ListChecks::default()).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::Shrunk {
                before: 20,
                after: 2,
                max_percent: 50
            }
        );
        assert!(refusal.to_string().contains("shrank from 20 to 2 entries"));
        let off = ListChecks {
            max_shrink_percent: 100,
        };
        assert_eq!(screen(&list, Some(20), off), Ok(()));
        assert_eq!(screen(&Entries::default(), Some(20), off), Ok(()));
    }

    #[test]
    fn mostly_invalid_lines_are_refused() {
        let list = domains("a.com\nnot a domain\nalso bad\n");
        assert_eq!(
            screen(&list, None, ListChecks::default()),
            Err(Refusal::MostlyInvalid {
                invalid: 2,
                lines: 3
            })
        );
    }

    #[test]
    fn binary_files_are_refused_and_a_stray_latin1_byte_is_not() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("list.txt");
        let mut garbage = b"bet365.com\n".to_vec();
        garbage.extend((0..=255u8).cycle().take(4096));
        std::fs::write(&path, &garbage).unwrap();
        let entries = read(ListFormat::Domains, &path).unwrap();
        let refusal = screen(&entries, None, ListChecks::default()).unwrap_err();
        assert!(
            refusal.to_string().contains("holds binary data (byte 0x00"),
            "{refusal}"
        );

        std::fs::write(&path, b"caf\xe9.example\nbet365.com\nbet.com\n").unwrap();
        let entries = read(ListFormat::Domains, &path).unwrap();
        assert_eq!(entries.binary, None);
        assert_eq!(screen(&entries, None, ListChecks::default()), Ok(()));
    }
}
