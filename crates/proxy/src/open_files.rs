//! The process's open-file limit (`RLIMIT_NOFILE`). Every client connection is a file
//! descriptor, and so is its origin connection or tunnel: with the usual soft limit
//! of 1024, `proxy.max_connections` cannot be reached. At start SafeGate raises the
//! soft limit to the hard limit; `safegate doctor` warns when the hard limit is too
//! low for the configured connections.

use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

/// File descriptors `max_connections` may need: a client side and an origin side each,
/// and some for listeners, the store and logs.
pub fn needed(max_connections: usize) -> u64 {
    (max_connections as u64)
        .saturating_mul(2)
        .saturating_add(64)
}

/// The open-file limit: soft and hard, `None` meaning unlimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFileLimit {
    /// What the process may open now.
    pub soft: Option<u64>,
    /// What the soft limit may be raised to without privileges.
    pub hard: Option<u64>,
}

impl OpenFileLimit {
    /// The limit as it stands.
    pub fn current() -> Self {
        let Rlimit { current, maximum } = getrlimit(Resource::Nofile);
        Self {
            soft: current,
            hard: maximum,
        }
    }

    /// Whether the hard limit leaves room for `max_connections`.
    pub fn hard_allows(&self, max_connections: usize) -> bool {
        self.hard.is_none_or(|hard| hard >= needed(max_connections))
    }
}

/// Raises the soft limit to the hard limit (an unlimited hard limit is left alone:
/// Linux refuses it for open files); returns the limit before and after.
pub fn raise_to_hard() -> (OpenFileLimit, Result<OpenFileLimit, std::io::Error>) {
    let before = OpenFileLimit::current();
    let Some(hard) = before.hard else {
        return (before, Ok(before));
    };
    if before.soft.is_some_and(|soft| soft >= hard) {
        return (before, Ok(before));
    }
    let raised = setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(hard),
            maximum: Some(hard),
        },
    );
    match raised {
        Ok(()) => (before, Ok(OpenFileLimit::current())),
        Err(error) => (before, Err(error.into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_can_be_raised_to_the_hard_one() {
        let (before, after) = raise_to_hard();
        let Ok(after) = after else {
            panic!("raising the open-file limit failed: {after:?}");
        };
        assert_eq!(after.hard, before.hard);
        if let Some(hard) = before.hard {
            assert_eq!(after.soft, Some(hard));
        }
        assert_eq!(needed(4096), 8256);
        assert!(
            !OpenFileLimit {
                soft: Some(1024),
                hard: Some(1024)
            }
            .hard_allows(4096)
        );
        assert!(
            OpenFileLimit {
                soft: None,
                hard: None
            }
            .hard_allows(4096)
        );
    }
}
