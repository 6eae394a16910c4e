//! Why a policy file was refused. Each variant is something a caller can act on:
//! the file could not be read, it is not valid TOML, a key has the wrong type or is
//! unknown, the rules do not make sense (every problem listed), or the lists could not
//! be compiled. In every case the previous policy stays live.

use std::fmt;
use std::path::PathBuf;

use crate::lists::ListError;

/// A policy file that could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// The policy file itself could not be read.
    #[error("cannot read policy file {}: {source}", path.display())]
    Read {
        /// The policy file.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Syntax {
        /// The policy file.
        path: PathBuf,
        /// 1-based line of the error.
        line: usize,
        /// 1-based column (in characters) of the error.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A key is unknown, missing or has the wrong type.
    #[error("{}:{}key `{key}`: {message}", path.display(), location_prefix(*line, *column))]
    Schema {
        /// The policy file.
        path: PathBuf,
        /// 1-based line, when known.
        line: Option<usize>,
        /// 1-based column, when known.
        column: Option<usize>,
        /// Dotted path of the key, e.g. `roles.pupil.block[2]`.
        key: String,
        /// What is wrong.
        message: String,
    },
    /// The file parsed but its rules are inconsistent; every problem is listed.
    #[error("{}: invalid policy{}", path.display(), ProblemList(problems))]
    Invalid {
        /// The policy file.
        path: PathBuf,
        /// Every problem found.
        problems: Vec<Problem>,
    },
    /// One or more list files were refused by screening (binary, mostly invalid, or
    /// cut short against the list in force); nothing of the policy was compiled, so a
    /// reloader keeps the previous policy, with its lists, in force.
    #[error("{}: list refused, the previous lists stay in force{}", path.display(), RefusalList(refusals))]
    ListsRefused {
        /// The policy file.
        path: PathBuf,
        /// Every refused list file.
        refusals: Vec<ListRefusal>,
    },
    /// The lists were read but could not be compiled into one index.
    #[error("{}: cannot compile the lists: {source}", path.display())]
    Index {
        /// The policy file.
        path: PathBuf,
        /// The list crate's error.
        source: ListError,
    },
}

/// One problem found by validation, named by the key it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Dotted path of the key, e.g. `roles.staff.block[3].windows[0]`.
    pub key: String,
    /// 1-based line of the key in the file, when known.
    pub line: Option<usize>,
    /// What is wrong, for people.
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "line {line}: {}: {}", self.key, self.message),
            None => write!(f, "{}: {}", self.key, self.message),
        }
    }
}

/// A list file that screening refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListRefusal {
    /// The category whose source the file is (the `list` label of the metric).
    pub category: String,
    /// The list file or UT1 folder.
    pub file: PathBuf,
    /// Why, for people.
    pub reason: crate::lists::Refusal,
}

impl fmt::Display for ListRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "list `{}` ({}): {}",
            self.category,
            self.file.display(),
            self.reason
        )
    }
}

struct RefusalList<'a>(&'a [ListRefusal]);

impl fmt::Display for RefusalList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for refusal in self.0 {
            write!(f, "\n  {refusal}")?;
        }
        Ok(())
    }
}

struct ProblemList<'a>(&'a [Problem]);

impl fmt::Display for ProblemList<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for problem in self.0 {
            write!(f, "\n  {problem}")?;
        }
        Ok(())
    }
}

fn location_prefix(line: Option<usize>, column: Option<usize>) -> String {
    match (line, column) {
        (Some(line), Some(column)) => format!("{line}:{column}: "),
        (Some(line), None) => format!("{line}: "),
        _ => " ".to_string(),
    }
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
pub(crate) fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, column)
}
