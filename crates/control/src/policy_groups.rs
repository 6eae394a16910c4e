//! The groups a policy file defines (`[groups.NAME]` and `[roles.ROLE.groups.NAME]`),
//! read from its TOML without compiling the policy and its lists, so that `safegate
//! users add|update|import` can refuse a group the policy does not know (a misspelt
//! `year6` would otherwise leave a pupil with the role's rules only).

use std::collections::BTreeMap;
use std::path::Path;

/// Group name → role, or why the file could not be read.
pub fn policy_groups(policy_file: &Path) -> Result<BTreeMap<String, String>, String> {
    let text = std::fs::read_to_string(policy_file)
        .map_err(|e| format!("cannot read policy {}: {e}", policy_file.display()))?;
    groups_of(&text).map_err(|e| format!("policy {}: {e}", policy_file.display()))
}

/// Group name → role in a policy's text.
pub fn groups_of(text: &str) -> Result<BTreeMap<String, String>, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.message().to_owned())?;
    let mut groups = BTreeMap::new();
    if let Some(roles) = table.get("roles").and_then(toml::Value::as_table) {
        for (role, rules) in roles {
            if let Some(under) = rules.get("groups").and_then(toml::Value::as_table) {
                for name in under.keys() {
                    groups.insert(name.clone(), role.clone());
                }
            }
        }
    }
    if let Some(defined) = table.get("groups").and_then(toml::Value::as_table) {
        for (name, group) in defined {
            let role = group
                .get("role")
                .and_then(toml::Value::as_str)
                .unwrap_or_default();
            groups.insert(name.clone(), role.to_owned());
        }
    }
    Ok(groups)
}

/// Why `group` (for a user of `role`, when known) is refused, if it is.
pub fn group_problem(
    groups: &BTreeMap<String, String>,
    group: &str,
    role: Option<&str>,
) -> Option<String> {
    match groups.get(group) {
        None => Some(format!(
            "group `{group}` is not defined in the policy ({})",
            if groups.is_empty() {
                "it defines no groups: add [groups.NAME] first".to_owned()
            } else {
                format!(
                    "groups: {}",
                    groups.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            }
        )),
        Some(owner) if role.is_some_and(|r| r != owner) => Some(format!(
            "group `{group}` is a group of {owner}, not of {}",
            role.unwrap_or_default()
        )),
        Some(_) => None,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn groups_come_from_both_places() {
        let groups = groups_of(
            "[groups.year6]\nrole = \"pupil\"\n[roles.staff.groups.science]\nallow = []\n",
        )
        .unwrap();
        assert_eq!(groups.get("year6").map(String::as_str), Some("pupil"));
        assert_eq!(groups.get("science").map(String::as_str), Some("staff"));
        assert!(group_problem(&groups, "year6", Some("pupil")).is_none());
        assert!(
            group_problem(&groups, "year9", None)
                .unwrap()
                .contains("not defined in the policy (groups: science, year6)")
        );
        assert!(
            group_problem(&groups, "year6", Some("staff"))
                .unwrap()
                .contains("a group of pupil")
        );
    }
}
