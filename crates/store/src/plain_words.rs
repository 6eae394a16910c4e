//! What people read instead of machine names: alert kinds and statuses in words, the
//! rule that decided a request in words ("blocked for pupils: gambling"), and sizes
//! that never round to nothing ("under 1 MB", not "0 MB"). The machine forms
//! (`safeguarding_phrase`, `category:pupil:gambling`) stay in JSON and in the details
//! staff can unfold.

use crate::{AlertKind, AlertStatus};

impl AlertKind {
    /// The kind in words: "Worrying words in a search or address".
    pub fn in_words(self) -> &'static str {
        match self {
            AlertKind::SafeguardingPhrase => "Worrying words in a search or address",
            AlertKind::RepeatedBlocks => "Many blocked attempts",
            AlertKind::Circumvention => "Trying to get round the filter",
            AlertKind::LockedCategory => "Illegal content attempted",
            AlertKind::ConcurrentLogin => "Signed in on two computers at once",
            AlertKind::HeavyUse => "Unusually heavy use",
            AlertKind::StaffSocialCoreHours => "Staff social media in core hours",
        }
    }
}

impl AlertStatus {
    /// The status in words: "new", "acknowledged", "closed".
    pub fn in_words(self) -> &'static str {
        match self {
            AlertStatus::New => "new",
            AlertStatus::Acknowledged => "being handled",
            AlertStatus::Closed => "closed",
        }
    }
}

/// The people of a role in words.
fn people(role: &str) -> String {
    match role {
        "pupil" => "pupils".to_owned(),
        "filter-admin" => "filter admins".to_owned(),
        other => other.to_owned(),
    }
}

/// A decision's rule id in words: `category:pupil:gambling` is "blocked for pupils:
/// gambling", `deny:group:year6` "on the deny list of year6". Ids it does not know
/// are shown as they are.
pub fn rule_in_words(rule: &str) -> String {
    let parts: Vec<&str> = rule.split(':').collect();
    match parts.as_slice() {
        ["default"] => "allowed (no rule applies)".to_owned(),
        ["locked", category] => format!("blocked for everyone: {category} (illegal content)"),
        ["allow", "global"] => "on the school's allow list".to_owned(),
        ["allow", "role", role] => format!("on the allow list for {}", people(role)),
        ["allow", "group", group] => format!("on the allow list of {group}"),
        ["deny", "global"] => "blocked for everyone: on the deny list".to_owned(),
        ["deny", "role", role] => format!("blocked for {}: on the deny list", people(role)),
        ["deny", "group", group] => format!("blocked for {group}: on the deny list"),
        ["unblock", id] => format!("unblocked for a while (unblock {id})"),
        ["category", role, category] => format!("blocked for {}: {category}", people(role)),
        ["ip-address-host", role] => {
            format!(
                "blocked for {}: a site reached by its IP address",
                people(role)
            )
        }
        ["file", role, rule] => format!("blocked for {}: {rule} files", people(role)),
        ["content", role] => format!(
            "blocked for {}: the words on the page scored over the limit",
            people(role)
        ),
        ["banned-search", role] => format!("blocked for {}: a banned search", people(role)),
        _ => rule.to_owned(),
    }
}

/// Bytes in words that never round to nothing: "0 bytes", "under 1 MB", "12 MB",
/// "1.4 GB".
pub fn size_in_words(bytes: u64) -> String {
    const MB: u64 = 1_000_000;
    const GB: u64 = 1_000_000_000;
    match bytes {
        0 => "0 bytes".to_owned(),
        1..MB => "under 1 MB".to_owned(),
        MB..GB => format!("{} MB", bytes / MB),
        _ => format!("{:.1} GB", bytes as f64 / GB as f64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_in_words() {
        assert_eq!(
            rule_in_words("category:pupil:gambling"),
            "blocked for pupils: gambling"
        );
        assert_eq!(
            rule_in_words("deny:role:pupil"),
            "blocked for pupils: on the deny list"
        );
        assert_eq!(
            rule_in_words("deny:group:year6"),
            "blocked for year6: on the deny list"
        );
        assert_eq!(
            rule_in_words("locked:illegal"),
            "blocked for everyone: illegal (illegal content)"
        );
        assert_eq!(
            rule_in_words("file:pupil:executables"),
            "blocked for pupils: executables files"
        );
        assert_eq!(rule_in_words("something:new"), "something:new");
    }

    #[test]
    fn sizes_never_round_to_nothing() {
        assert_eq!(size_in_words(0), "0 bytes");
        assert_eq!(size_in_words(1), "under 1 MB");
        assert_eq!(size_in_words(999_999), "under 1 MB");
        assert_eq!(size_in_words(12_400_000), "12 MB");
        assert_eq!(size_in_words(1_400_000_000), "1.4 GB");
    }
}
