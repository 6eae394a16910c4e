//! Groups as people and pages see them: `[groups.NAME]` names a group (a year group,
//! a class), the role its members browse as, a description, the computers' address
//! ranges that count as the group when nobody has signed in, the staff who teach it
//! (the `teach` permission acts only on these), and the lesson length a teacher may
//! unblock for (`[teaching]`). A group's filtering rules stay in
//! `[roles.ROLE.groups.NAME]`; a group written only there is still a group of that
//! role. Every problem is reported with its key, like the rest of the compile.

use std::collections::BTreeMap;
use std::net::IpAddr;

use ipnet::IpNet;
use serde::Deserialize;

use crate::snapshot::{GroupInfo, Role, Teaching};

/// `[groups.NAME]` as written.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct GroupDefFile {
    /// The role the group's members browse as.
    pub role: String,
    /// What the group is, for people (e.g. "Year 6, Mr Jones's class").
    #[serde(default)]
    pub description: Option<String>,
    /// Address ranges (`10.0.6.0/24`) or addresses of the group's computers.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Admin accounts (staff) that teach the group.
    #[serde(default)]
    pub teachers: Vec<String>,
}

/// `[teaching]` as written: how long a teacher's unblock or focus may last.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TeachingFile {
    /// The default length of a lesson, in minutes.
    #[serde(default = "default_lesson")]
    pub lesson_minutes: u32,
    /// The longest a teacher's change may last, in minutes.
    #[serde(default = "default_lesson")]
    pub max_minutes: u32,
}

fn default_lesson() -> u32 {
    60
}

impl Default for TeachingFile {
    fn default() -> Self {
        Self {
            lesson_minutes: default_lesson(),
            max_minutes: default_lesson(),
        }
    }
}

/// Reads an address range (`10.0.6.0/24`) or a single address (`10.0.6.7`).
pub fn parse_range(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    if let Ok(net) = text.parse::<IpNet>() {
        return Ok(net.trunc());
    }
    text.parse::<IpAddr>()
        .map(IpNet::from)
        .map_err(|_| format!("`{text}` is not an address or a range such as 10.0.6.0/24"))
}

/// Compiles `[groups]` together with the groups written under roles, reporting
/// problems through `problem(key, message)`. Groups come out in name order.
pub(crate) fn compile(
    defined: &BTreeMap<String, GroupDefFile>,
    under_roles: &[(String, String)],
    problem: &mut dyn FnMut(String, String),
) -> Vec<GroupInfo> {
    let mut out: BTreeMap<String, GroupInfo> = BTreeMap::new();
    for (name, group) in defined {
        let key = format!("groups.{name}");
        let name_ok = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !name_ok {
            problem(key.clone(), "names use letters, digits, `-` and `_`".into());
        }
        if name.parse::<Role>().is_ok() {
            problem(key.clone(), "a group cannot have a role's name".into());
        }
        let role = match group.role.parse::<Role>() {
            Ok(role) => role,
            Err(err) => {
                problem(format!("{key}.role"), err.to_string());
                continue;
            }
        };
        let mut addresses = Vec::new();
        for (i, text) in group.addresses.iter().enumerate() {
            match parse_range(text) {
                Ok(net) => addresses.push(net),
                Err(why) => problem(format!("{key}.addresses[{i}]"), why),
            }
        }
        out.insert(
            name.clone(),
            GroupInfo {
                name: name.clone(),
                role,
                description: group.description.clone().unwrap_or_default(),
                addresses,
                teachers: group.teachers.clone(),
            },
        );
    }
    for (role, name) in under_roles {
        let Ok(role) = role.parse::<Role>() else {
            continue;
        };
        match out.get(name) {
            // Two roles with the same group name: the roles' check reports it.
            Some(_) if !defined.contains_key(name) => {}
            Some(group) if group.role != role => problem(
                format!("roles.{}.groups.{name}", role.as_str()),
                format!(
                    "group `{name}` is a group of {} ([groups.{name}] role)",
                    group.role.as_str()
                ),
            ),
            Some(_) => {}
            None => {
                out.insert(
                    name.clone(),
                    GroupInfo {
                        name: name.clone(),
                        role,
                        description: String::new(),
                        addresses: Vec::new(),
                        teachers: Vec::new(),
                    },
                );
            }
        }
    }
    let groups: Vec<GroupInfo> = out.into_values().collect();
    for (i, group) in groups.iter().enumerate() {
        for other in &groups[i + 1..] {
            if let Some(net) = group.addresses.iter().find(|net| {
                other
                    .addresses
                    .iter()
                    .any(|o| o.contains(*net) || net.contains(o))
            }) {
                problem(
                    format!("groups.{}.addresses", other.name),
                    format!("{net} is also an address of group `{}`", group.name),
                );
            }
        }
    }
    groups
}

/// Checks `[teaching]`.
pub(crate) fn teaching(file: &TeachingFile, problem: &mut dyn FnMut(String, String)) -> Teaching {
    if !(1..=1440).contains(&file.max_minutes) {
        problem("teaching.max_minutes".into(), "is 1 to 1440 minutes".into());
    }
    if file.lesson_minutes == 0 || file.lesson_minutes > file.max_minutes {
        problem(
            "teaching.lesson_minutes".into(),
            "is at least 1 and at most `max_minutes`".into(),
        );
    }
    Teaching {
        lesson_minutes: file.lesson_minutes.clamp(1, 1440),
        max_minutes: file.max_minutes.clamp(1, 1440),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn ranges_and_addresses_are_read() {
        assert_eq!(
            parse_range("10.0.6.9/24").unwrap().to_string(),
            "10.0.6.0/24"
        );
        assert_eq!(parse_range("10.0.6.9").unwrap().to_string(), "10.0.6.9/32");
        assert!(parse_range("10.0.6").is_err());
    }

    #[test]
    fn groups_under_roles_join_and_must_agree() {
        let mut defined = BTreeMap::new();
        defined.insert(
            "year6".to_owned(),
            GroupDefFile {
                role: "pupil".into(),
                ..GroupDefFile::default()
            },
        );
        let mut problems = Vec::new();
        let groups = compile(
            &defined,
            &[
                ("staff".into(), "year6".into()),
                ("pupil".into(), "year5".into()),
            ],
            &mut |key, why| problems.push(format!("{key}: {why}")),
        );
        assert_eq!(groups.len(), 2);
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("is a group of pupil"), "{problems:?}");
    }
}
