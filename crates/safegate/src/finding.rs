//! One check's outcome, as `safegate doctor` prints it: OK, WARN or FAIL, what was
//! found, and what to do. Shared by doctor's checks and the unit-file check.

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    /// Nothing to do.
    Ok,
    /// Works, but look at it.
    Warn,
    /// SafeGate will not start, or will not work as configured.
    Fail,
}

/// One check's outcome.
#[derive(Debug, Clone)]
pub struct Finding {
    /// OK, WARN or FAIL.
    pub level: Level,
    /// What was checked.
    pub check: &'static str,
    /// What was found.
    pub detail: String,
    /// What to do about it (for WARN and FAIL).
    pub fix: Option<String>,
}

impl Finding {
    pub(crate) fn ok(check: &'static str, detail: impl Into<String>) -> Self {
        Self {
            level: Level::Ok,
            check,
            detail: detail.into(),
            fix: None,
        }
    }

    pub(crate) fn warn(
        check: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            level: Level::Warn,
            check,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub(crate) fn fail(
        check: &'static str,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            level: Level::Fail,
            check,
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}
