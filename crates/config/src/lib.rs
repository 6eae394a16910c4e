//! What every section of `safegate.toml` reports from its `validate()`: a
//! [`ConfigProblem`], the dotted key and what is wrong with it.
//!
//! Each crate owns its section (`[proxy]` in the proxy crate, `[store]` in the store,
//! `[delivery]` in safeguarding, `[report]` in the report crate, ...) and validates it
//! without stopping at the first problem; the binary collects every section's
//! problems and prints them all at once, one `key: message` line each. This crate is
//! the one type they share, so it sits below all of them; it also applies the command
//! line's `--set KEY=VALUE` overrides to the parsed file ([`apply_override`]).

/// One configuration problem: the dotted key and what is wrong with it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    /// Dotted key, e.g. `proxy.connect_ports`.
    pub key: String,
    /// What is wrong, in words a technician can act on.
    pub message: String,
}

impl ConfigProblem {
    /// A problem with `key`.
    pub fn new(key: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.key, self.message)
    }
}

impl std::error::Error for ConfigProblem {}

/// A `--set KEY=VALUE` that cannot be applied; the message names the assignment.
#[derive(Debug, thiserror::Error)]
pub enum OverrideError {
    /// No `=`.
    #[error("--set {0}: expected KEY=VALUE, e.g. --set 'proxy.listen=\"0.0.0.0:3128\"'")]
    NotAssignment(String),
    /// The key is not `section.key` made of letters, digits, `_` and `-`.
    #[error("--set {assignment}: `{key}` is not a dotted key like proxy.listen")]
    BadKey {
        /// The whole `--set` argument.
        assignment: String,
        /// Its key.
        key: String,
    },
    /// The value is not TOML (a string without quotes, most often).
    #[error(
        "--set {assignment}: `{raw}` is not a TOML value (strings need quotes: {key}='\"...\"')"
    )]
    BadValue {
        /// The whole `--set` argument.
        assignment: String,
        /// Its key.
        key: String,
        /// Its value as given.
        raw: String,
        /// What the TOML parser said.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// A part of the key names a value, so it cannot hold a key.
    #[error("--set {assignment}: `{section}` is a value, not a section")]
    NotSection {
        /// The whole `--set` argument.
        assignment: String,
        /// The part of the key that is a value.
        section: String,
    },
}

/// Applies one `--set KEY=VALUE` (dotted key, TOML value) to the parsed file,
/// creating the sections it names.
pub fn apply_override(table: &mut toml::Table, assignment: &str) -> Result<(), OverrideError> {
    let Some((key, raw_value)) = assignment.split_once('=') else {
        return Err(OverrideError::NotAssignment(assignment.to_owned()));
    };
    let key = key.trim();
    let segments: Vec<&str> = key.split('.').collect();
    if segments.iter().any(|segment| {
        segment.is_empty()
            || !segment
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    }) {
        return Err(OverrideError::BadKey {
            assignment: assignment.to_owned(),
            key: key.to_owned(),
        });
    }
    let raw = raw_value.trim();
    let mut wrapper: toml::Table =
        toml::from_str(&format!("value = {raw}")).map_err(|source| OverrideError::BadValue {
            assignment: assignment.to_owned(),
            key: key.to_owned(),
            raw: raw.to_owned(),
            source: Box::new(source),
        })?;
    let value = wrapper
        .remove("value")
        .unwrap_or(toml::Value::Boolean(false));
    let (last, parents) = segments.split_last().unwrap_or((&"", &[]));
    let mut current = table;
    for (depth, segment) in parents.iter().enumerate() {
        let entry = current
            .entry((*segment).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        current = match entry {
            toml::Value::Table(inner) => inner,
            _ => {
                return Err(OverrideError::NotSection {
                    assignment: assignment.to_owned(),
                    section: segments[..=depth].join("."),
                });
            }
        };
    }
    current.insert((*last).to_owned(), value);
    Ok(())
}

/// `<redacted>` in place of a secret set in the configuration, for `safegate config
/// show` (which prints the effective configuration, often pasted into support
/// tickets); empty when unset. Use with `#[serde(serialize_with = ...)]`.
pub fn serialize_redacted<S: serde::Serializer>(
    secret: &Option<String>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    match secret {
        Some(secret) if !secret.is_empty() => serializer.serialize_str("<redacted>"),
        _ => serializer.serialize_str(""),
    }
}
