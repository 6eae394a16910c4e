//! `safegate setup`'s list step: imports the UT1 collection beside the policy (in
//! `../blocklists/ut1`, where the shipped policy's own lists are) and adds each UT1
//! category to the shipped category it belongs to, so the starter lists are joined by
//! the full ones. A category that names the UT1 folder already is left alone, so
//! running setup again only refreshes the lists.

use std::path::Path;

use anyhow::{Context, Result};
use safegate_lists::import::{DEFAULT_MAX_MIB, ImportOptions, import_ut1};

/// The shipped categories and the UT1 categories that feed each.
const UT1_FOR: [(&str, &[&str]); 5] = [
    ("pornography", &["adult"]),
    ("gambling", &["gambling"]),
    ("hate", &["agressif"]),
    ("social-networking", &["social_networks"]),
    (
        "circumvention",
        &["redirector", "strict_redirector", "vpn", "doh"],
    ),
];

/// Imports the lists from `from` and adds them to the policy at `policy_file`.
pub fn import_and_use(policy_file: &Path, from: &str) -> Result<()> {
    let policy_file = std::path::absolute(policy_file).unwrap_or_else(|_| policy_file.to_owned());
    let policy_folder = policy_file
        .parent()
        .context("the policy file has no folder")?;
    // Beside the policy's own lists (`../blocklists/`), as the policy names them.
    let (folder, named_as) = match policy_folder.parent() {
        Some(above) => (above.join("blocklists/ut1"), "../blocklists/ut1".to_owned()),
        None => {
            let folder = policy_folder.join("blocklists/ut1");
            let named_as = folder.display().to_string();
            (folder, named_as)
        }
    };
    let policy_file = policy_file.as_path();
    let options = ImportOptions {
        from: from.to_owned(),
        into: folder.clone(),
        categories: UT1_FOR
            .iter()
            .flat_map(|(_, ut1)| ut1.iter().map(|c| (*c).to_owned()))
            .collect(),
        max_mib: DEFAULT_MAX_MIB,
        timeout: std::time::Duration::from_secs(600),
    };
    let summary = import_ut1(&options)?;
    print!("category lists: {summary}");
    let added = add_sources(policy_file, &folder, &named_as)?;
    if added.is_empty() {
        println!("category lists: the policy uses them already");
    } else {
        println!("category lists: added to {}", added.join(", "));
    }
    Ok(())
}

/// Adds a `format = "ut1"` source for each UT1 category folder in `folder` (which the
/// policy names `named_as`) to its shipped category; the names of the categories
/// changed.
fn add_sources(policy_file: &Path, folder: &Path, named_as: &str) -> Result<Vec<String>> {
    let text = std::fs::read_to_string(policy_file)
        .with_context(|| format!("cannot read the policy {}", policy_file.display()))?;
    let mut doc: toml_edit::DocumentMut = text
        .parse()
        .with_context(|| format!("the policy {} is not valid TOML", policy_file.display()))?;
    let mut changed = Vec::new();
    for (category, ut1) in UT1_FOR {
        let Some(sources) = doc
            .get_mut("categories")
            .and_then(|c| c.get_mut(category))
            .and_then(|c| c.get_mut("sources"))
            .and_then(|s| s.as_array_mut())
        else {
            continue;
        };
        let mut added = false;
        for name in ut1 {
            let relative = format!("{named_as}/{name}");
            let present = sources.iter().any(|source| {
                source
                    .as_inline_table()
                    .and_then(|t| t.get("path"))
                    .and_then(|p| p.as_str())
                    == Some(relative.as_str())
            });
            if present || !folder.join(name).is_dir() {
                continue;
            }
            let mut source = toml_edit::InlineTable::new();
            source.insert("format", "ut1".into());
            source.insert("path", relative.as_str().into());
            sources.push(source);
            added = true;
        }
        if added {
            changed.push(category.to_owned());
        }
    }
    if !changed.is_empty() {
        crate::policy_write::replace_checked(policy_file, &doc.to_string())?;
    }
    Ok(changed)
}
