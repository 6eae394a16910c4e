//! `safegate lists import --format e2guardian-phrases`: reads an e2guardian weighted
//! phrase list (following its `.Include<...>` lines), checks every line, and writes
//! one list per category into a folder, folded and flattened, in the same format, so
//! the policy's `[content] lists` can name them. Each file is written whole and then
//! renamed into place: a failed import leaves the previous lists as they were.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use anyhow::Context;
use safegate_content::WeightedEntry;
use safegate_content::weighted_list::read_list_skipping;

/// Where imported phrase lists go unless `--into` says otherwise.
pub const DEFAULT_INTO: &str = "blocklists/content/imported";

/// Imports `from` into `into`; the summary to print.
pub fn import(from: &Path, into: &Path, keep: &[String]) -> anyhow::Result<String> {
    let fallback = from
        .file_name()
        .and_then(|n| n.to_str())
        .filter(|n| *n != "weighted")
        .or_else(|| from.parent()?.file_name()?.to_str())
        .unwrap_or("imported")
        .to_lowercase();
    let (entries, skipped) = read_list_skipping(from, &fallback)
        .with_context(|| format!("reading {}", from.display()))?;
    // The set must compile, as the policy will compile it.
    safegate_content::PhraseSet::build(&entries).context("compiling the phrases")?;
    let mut by_category: BTreeMap<String, Vec<&WeightedEntry>> = BTreeMap::new();
    for entry in &entries {
        if keep.is_empty() || keep.iter().any(|k| k == &entry.category) {
            by_category
                .entry(entry.category.clone())
                .or_default()
                .push(entry);
        }
    }
    anyhow::ensure!(
        !by_category.is_empty(),
        "{} holds no phrase{}",
        from.display(),
        if keep.is_empty() {
            ""
        } else {
            " of those categories"
        }
    );
    std::fs::create_dir_all(into).with_context(|| format!("creating {}", into.display()))?;
    let mut summary = String::new();
    let mut lists = String::new();
    for (category, entries) in &by_category {
        let path = into.join(format!("{}.txt", file_name(category)));
        write_list(&path, category, from, entries)?;
        let _ = writeln!(
            summary,
            "  {category:<24} {} entries → {}",
            entries.len(),
            path.display()
        );
        let _ = writeln!(
            lists,
            "  {{ path = \"{}\", category = \"{category}\" }},",
            path.display()
        );
    }
    for error in skipped.iter().take(20) {
        let _ = writeln!(summary, "  skipped: {error}");
    }
    if skipped.len() > 20 {
        let _ = writeln!(summary, "  skipped {} more lines", skipped.len() - 20);
    }
    Ok(format!(
        "Imported {} weighted phrase entries from {}:\n{summary}\nName them in the policy (paths relative to the policy file):\n[content]\nlists = [\n{lists}]\n",
        by_category.values().map(Vec::len).sum::<usize>(),
        from.display()
    ))
}

/// A category name as a file name: letters, digits, `-` and `_`.
fn file_name(category: &str) -> String {
    category
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '-'
            }
        })
        .collect()
}

fn write_list(
    path: &Path,
    category: &str,
    from: &Path,
    entries: &[&WeightedEntry],
) -> anyhow::Result<()> {
    let mut text = format!(
        "# Imported by `safegate lists import --format e2guardian-phrases` from {}\n# Phrases are folded (case, accents, leetspeak); edit freely.\n#listcategory: \"{category}\"\n",
        from.display()
    );
    for entry in entries {
        let parts: Vec<String> = entry.parts.iter().map(|p| p.written()).collect();
        let _ = writeln!(text, "{}<{}>", parts.join(","), entry.weight);
    }
    let partial: PathBuf = path.with_extension("txt.partial");
    std::fs::write(&partial, text).with_context(|| format!("writing {}", partial.display()))?;
    std::fs::rename(&partial, path).with_context(|| format!("installing {}", path.display()))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn imports_includes_and_categories_into_lists_that_read_back() {
        let dir = tempfile::tempdir().unwrap();
        let lists = dir.path().join("e2g");
        std::fs::create_dir_all(lists.join("gambling")).unwrap();
        std::fs::write(
            lists.join("weightedphraselist"),
            ".Include<gambling/weighted>\n#listcategory: \"Pornography\"\n< P0RN ><50>\n<sex>,< video ><40>\n",
        )
        .unwrap();
        std::fs::write(
            lists.join("gambling/weighted"),
            "#listcategory: \"Gambling\"\n< casino ><30>\n< gambling addiction ><-40>\n",
        )
        .unwrap();
        let into = dir.path().join("out");
        let summary = import(&lists.join("weightedphraselist"), &into, &[]).unwrap();
        assert!(summary.contains("gambling"), "{summary}");
        let porn = std::fs::read_to_string(into.join("pornography.txt")).unwrap();
        assert!(porn.contains("< porn ><50>"), "{porn}");
        assert!(porn.contains("<sex>,< video ><40>"), "{porn}");
        let back =
            safegate_content::weighted_list::read_list(&into.join("gambling.txt"), "x").unwrap();
        assert_eq!(back.len(), 2);
        assert_eq!(back[1].weight, -40);
        assert!(import(&lists.join("weightedphraselist"), &into, &["none".into()]).is_err());
        std::fs::write(lists.join("bad"), "<a><x>\n<b><5>\n").unwrap();
        let summary = import(&lists.join("bad"), &into, &[]).unwrap();
        assert!(
            summary.contains("skipped") && summary.contains("line 1"),
            "{summary}"
        );
        let back = safegate_content::weighted_list::read_list(&into.join("bad.txt"), "x").unwrap();
        assert_eq!(back.len(), 1);
    }
}
