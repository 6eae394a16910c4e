//! What every section of `safegate.toml` reports from its `validate()`: a
//! [`ConfigProblem`], the dotted key and what is wrong with it.
//!
//! Each crate owns its section (`[proxy]` in the proxy crate, `[store]` in the store,
//! `[delivery]` in safeguarding, `[report]` in the report crate, ...) and validates it
//! without stopping at the first problem; the binary collects every section's
//! problems and prints them all at once, one `key: message` line each. This crate is
//! the one type they share, so it sits below all of them and depends on nothing.

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
