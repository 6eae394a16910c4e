//! Weighted phrase lists in e2guardian's `weightedphraselist` format, which SafeGate's
//! own starter lists also use, so a school's e2guardian lists work unchanged:
//!
//! ```text
//! # comment
//! #listcategory: "Gambling"
//! < casino ><40>                 a phrase and its weight
//! <online betting><60>           no spaces inside the brackets: matched inside words too
//! < poker >,< odds ><50>         a combination: every part on the page, counted once
//! < gambling addiction ><-60>    a negative weight: context (help, teaching)
//! .Include</etc/e2guardian/lists/phraselists/gambling/weighted>
//! ```
//!
//! A space just inside `<` or `>` means a word boundary on that side. Phrases are
//! folded ([`crate::fold`]) before they are compiled, so case, accents, spacing and
//! leetspeak do not matter on either side. Includes are read relative to the including
//! file when relative, at most [`MAX_INCLUDE_DEPTH`] deep.

use std::path::{Path, PathBuf};

use crate::ContentError;
use crate::fold::fold_text;

/// How deep `.Include<...>` may nest (a loop is an error, not a hang).
pub const MAX_INCLUDE_DEPTH: usize = 8;

/// The largest list file read, in bytes.
pub const MAX_LIST_BYTES: u64 = 64 * 1024 * 1024;

/// One phrase as matched: its folded text and whether it must start and end on word
/// boundaries.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Phrase {
    /// The folded phrase (no spaces at either end).
    pub folded: String,
    /// A space inside `<` in the list: the phrase starts a word.
    pub word_start: bool,
    /// A space inside `>` in the list: the phrase ends a word.
    pub word_end: bool,
}

impl Phrase {
    /// The bytes the automaton looks for: the folded text with a space on each
    /// bounded side (the folded page has exactly one space between words).
    pub fn pattern(&self) -> String {
        let mut out = String::with_capacity(self.folded.len() + 2);
        if self.word_start {
            out.push(' ');
        }
        out.push_str(&self.folded);
        if self.word_end {
            out.push(' ');
        }
        out
    }

    /// The phrase written back in the list format (`< casino >`).
    pub fn written(&self) -> String {
        format!(
            "<{}{}{}>",
            if self.word_start { " " } else { "" },
            self.folded,
            if self.word_end { " " } else { "" }
        )
    }
}

/// One line of a list: a phrase, or a combination of phrases, with its weight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WeightedEntry {
    /// One phrase, or every part of a combination.
    pub parts: Vec<Phrase>,
    /// Added to the page's score when found (once per page); negative for context.
    pub weight: i32,
    /// The category the entry counts for.
    pub category: String,
}

/// Reads a weighted phrase list file (following its includes); entries without a
/// `#listcategory:` line take `category`.
pub fn read_list(path: &Path, category: &str) -> Result<Vec<WeightedEntry>, ContentError> {
    let mut entries = Vec::new();
    read_into(path, category, 0, &mut entries, None)?;
    Ok(entries)
}

/// As [`read_list`], but a line that is not in the format is skipped and reported
/// instead of failing the whole list (for importing lists written elsewhere, which
/// often have a few broken lines). Unreadable files and include loops still fail.
pub fn read_list_skipping(
    path: &Path,
    category: &str,
) -> Result<(Vec<WeightedEntry>, Vec<ContentError>), ContentError> {
    let mut entries = Vec::new();
    let mut skipped = Vec::new();
    read_into(path, category, 0, &mut entries, Some(&mut skipped))?;
    Ok((entries, skipped))
}

fn read_into(
    path: &Path,
    category: &str,
    depth: usize,
    entries: &mut Vec<WeightedEntry>,
    mut skipped: Option<&mut Vec<ContentError>>,
) -> Result<(), ContentError> {
    if depth > MAX_INCLUDE_DEPTH {
        return Err(ContentError::IncludeDepth(path.to_path_buf()));
    }
    let io = |source| ContentError::Read {
        path: path.to_path_buf(),
        source,
    };
    let size = std::fs::metadata(path).map_err(io)?.len();
    if size > MAX_LIST_BYTES {
        return Err(ContentError::TooLarge(path.to_path_buf()));
    }
    let bytes = std::fs::read(path).map_err(io)?;
    // e2guardian lists are often Latin-1; read what is not UTF-8 as Windows-1252.
    let (text, _, _) = encoding_rs::UTF_8.decode(&bytes);
    let text = if std::str::from_utf8(&bytes).is_ok() {
        text
    } else {
        encoding_rs::WINDOWS_1252.decode(&bytes).0
    };
    let mut category = category.to_owned();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim().trim_start_matches('\u{feff}');
        if let Some(name) = list_category(line) {
            category = name;
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(include) = include_target(line) {
            let target = resolve(path, include);
            read_into(
                &target,
                &category,
                depth + 1,
                entries,
                skipped.as_deref_mut(),
            )?;
            continue;
        }
        match parse_line(line, &category) {
            Ok(entry) => entries.extend(entry),
            Err(why) => {
                let error = ContentError::Line {
                    path: path.to_path_buf(),
                    line: number + 1,
                    why,
                };
                match skipped.as_deref_mut() {
                    Some(skipped) => skipped.push(error),
                    None => return Err(error),
                }
            }
        }
    }
    Ok(())
}

/// Parses one weighted list text (no includes) for tests and in-memory lists.
pub fn parse_text(text: &str, category: &str) -> Result<Vec<WeightedEntry>, ContentError> {
    let mut entries = Vec::new();
    let mut category = category.to_owned();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim().trim_start_matches('\u{feff}');
        if let Some(name) = list_category(line) {
            category = name;
        } else if !line.is_empty() && !line.starts_with('#') && include_target(line).is_none() {
            let entry = parse_line(line, &category).map_err(|why| ContentError::Line {
                path: PathBuf::from("(text)"),
                line: number + 1,
                why,
            })?;
            entries.extend(entry);
        }
    }
    Ok(entries)
}

/// `#listcategory: "Name"` → the name, lower-cased with spaces as `-`.
fn list_category(line: &str) -> Option<String> {
    let rest = line.strip_prefix("#listcategory:")?;
    let name = rest.trim().trim_matches('"').trim();
    (!name.is_empty()).then(|| name.to_lowercase().replace(' ', "-"))
}

/// `.Include<path>`, with an optional comment after it (`.Include<...> #BETA#`).
fn include_target(line: &str) -> Option<&str> {
    let (target, rest) = line.strip_prefix(".Include<")?.split_once('>')?;
    let rest = rest.trim();
    (rest.is_empty() || rest.starts_with('#')).then_some(target)
}

fn resolve(from: &Path, include: &str) -> PathBuf {
    let target = Path::new(include.trim());
    if target.is_absolute() {
        target.to_path_buf()
    } else {
        from.parent().unwrap_or(Path::new("")).join(target)
    }
}

/// One entry line: `<a>,<b>,...<weight>`. `None` for a line whose phrases fold to
/// nothing (punctuation only), which can never match.
fn parse_line(line: &str, category: &str) -> Result<Option<WeightedEntry>, String> {
    let mut groups = Vec::new();
    let mut rest = line;
    while !rest.is_empty() {
        let Some(open) = rest.strip_prefix('<') else {
            return Err(format!("expected `<` at `{rest}`"));
        };
        let Some(close) = open.find('>') else {
            return Err("a `<` without its `>`".to_owned());
        };
        groups.push(&open[..close]);
        rest = open[close + 1..].trim_start();
        rest = rest.strip_prefix(',').map_or(rest, str::trim_start);
        if rest.starts_with('#') {
            // A comment after the entry (`<oplysning><-15> #educating information`).
            break;
        }
    }
    let Some((weight, phrases)) = groups.split_last() else {
        return Err("no phrase".to_owned());
    };
    let weight: i32 = weight.trim().parse().map_err(|_| {
        format!("the last `<...>` must be a weight (a whole number), not `{weight}`")
    })?;
    if phrases.is_empty() {
        return Err("a weight without a phrase".to_owned());
    }
    let mut parts = Vec::with_capacity(phrases.len());
    for raw in phrases {
        let folded = fold_text(raw);
        if folded.is_empty() {
            return Ok(None);
        }
        parts.push(Phrase {
            folded,
            word_start: raw.starts_with(char::is_whitespace),
            word_end: raw.ends_with(char::is_whitespace),
        });
    }
    parts.sort();
    parts.dedup();
    Ok(Some(WeightedEntry {
        parts,
        weight,
        category: category.to_owned(),
    }))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn reads_phrases_combinations_weights_and_categories() {
        let text = "# x\n#listcategory: \"Gambling Sites\"\n< Casino ><40>\n<bet365><60>\n< poker >,< odds ><50>\n< gambling addiction ><-60>\n";
        let entries = parse_text(text, "default").unwrap();
        assert_eq!(entries.len(), 4);
        assert_eq!(entries[0].category, "gambling-sites");
        assert_eq!(entries[0].parts[0].pattern(), " casino ");
        assert_eq!(entries[1].parts[0].pattern(), "bete6s");
        assert_eq!(entries[2].parts.len(), 2);
        assert_eq!(entries[3].weight, -60);
        let commented = parse_text("\u{feff}<undervisning><-35> #education\n", "x").unwrap();
        assert_eq!(commented[0].weight, -35);
    }

    #[test]
    fn bad_lines_name_their_line() {
        let error = parse_text("<a><10>\n<b><ten>\n", "x").unwrap_err();
        assert!(error.to_string().contains("line 2"), "{error}");
        assert!(parse_text("<a>", "x").is_err());
        assert!(parse_text("<a><5", "x").is_err());
    }

    #[test]
    fn includes_are_followed_and_loops_refused() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, "<one><5>\n.Include<b>\n").unwrap();
        std::fs::write(dir.path().join("b"), "<two><7>\n").unwrap();
        assert_eq!(read_list(&a, "x").unwrap().len(), 2);
        std::fs::write(dir.path().join("b"), ".Include<a>\n").unwrap();
        assert!(matches!(
            read_list(&a, "x"),
            Err(ContentError::IncludeDepth(_))
        ));
    }
}
