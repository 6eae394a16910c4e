//! Replacing the policy file from the command line (`safegate setup`): the new text is
//! written beside it, compiled, and only then renamed over it, so a mistake never
//! reaches the running service and a reader never sees half a file.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// Writes `text` beside `path`, compiles it as a policy, and renames it over `path`.
pub fn replace_checked(path: &Path, text: &str) -> Result<()> {
    let temp = temp_beside(path);
    std::fs::write(&temp, text).with_context(|| format!("cannot write {}", temp.display()))?;
    if let Err(error) = safegate_policy::Policy::load(&temp) {
        let _ = std::fs::remove_file(&temp);
        return Err(error).context("the changed policy does not load; nothing was changed");
    }
    std::fs::rename(&temp, path).with_context(|| format!("cannot replace {}", path.display()))
}

fn temp_beside(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.setup-{}", std::process::id()))
}
