//! Central policy (issue 25): a trust signs one policy bundle (the policy file and its
//! lists) with an Ed25519 key; each school's SafeGate pulls it (`[policy.central]`),
//! checks it and installs it, keeping the school's own local section (its allow- and
//! deny-list) on top.
//!
//! A bundle is a JSON envelope `{"payload": base64, "signature": base64}`: the
//! signature is Ed25519 over the payload's bytes, which are JSON: a format number,
//! the bundle's version (it only ever goes up), when it was made, and the files by
//! relative path (base64), the policy at [`POLICY_PATH`], its lists where its relative
//! paths point (`../blocklists/x.txt` from `config/` is `blocklists/x.txt`).
//!
//! [`install`] refuses, and leaves the installed bundle in force, when the signature
//! does not verify, the version is not newer than the installed one, a path would leave
//! the bundle's folder, or the policy (with the local section) does not compile. An
//! accepted bundle is written whole into `central/v<version>` and then made current by
//! renaming a symbolic link (`central/current`) over the old one, so the policy file
//! SafeGate loads ([`current_policy`]) always belongs to one complete bundle.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use safegate_config::ConfigProblem;
use serde::{Deserialize, Serialize};

/// Where the policy file is inside a bundle.
pub const POLICY_PATH: &str = "config/policy.toml";
/// The bundle format this build reads and writes.
pub const FORMAT: u32 = 1;

/// Why a bundle was refused or could not be made.
#[derive(Debug, thiserror::Error)]
pub enum CentralError {
    /// The envelope or the payload is not a bundle.
    #[error("not a policy bundle: {0}")]
    Malformed(String),
    /// The signature does not verify with the configured key.
    #[error("the bundle's signature does not verify with policy.central.public_key")]
    BadSignature,
    /// The bundle is not newer than the one installed.
    #[error("bundle version {offered} is not newer than the installed version {installed}")]
    NotNewer {
        /// The bundle's version.
        offered: u64,
        /// The installed one.
        installed: u64,
    },
    /// A file's path would leave the bundle's folder.
    #[error("the bundle names a file outside its folder: {0}")]
    UnsafePath(String),
    /// The policy in the bundle (with the local section) does not compile.
    #[error("the bundle's policy does not compile: {0}")]
    Policy(String),
    /// A key could not be read or is not an Ed25519 key.
    #[error("key: {0}")]
    Key(String),
    /// Reading or writing files failed.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder.
        path: String,
        /// What the system said.
        source: std::io::Error,
    },
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> CentralError + '_ {
    move |source| CentralError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `[policy.central]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct CentralConfig {
    /// Where the trust publishes the bundle (`https://trust.example/safegate/bundle.json`).
    pub url: String,
    /// The trust's Ed25519 public key, base64 (as `safegate policy keygen` prints it).
    pub public_key: String,
    /// How often the bundle is fetched.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// The school's own section, kept on top of every bundle: a TOML file with
    /// `allow = [...]` and `deny = [...]` (added to the policy's `[global]` lists).
    pub local: Option<PathBuf>,
}

impl Default for CentralConfig {
    fn default() -> Self {
        Self {
            url: String::new(),
            public_key: String::new(),
            interval: Duration::from_secs(300),
            local: None,
        }
    }
}

impl CentralConfig {
    /// Every problem, with its key.
    pub fn validate(&self) -> Vec<ConfigProblem> {
        let mut problems = Vec::new();
        if !(self.url.starts_with("http://") || self.url.starts_with("https://")) {
            problems.push(ConfigProblem::new(
                "policy.central.url",
                "must start with http:// or https://",
            ));
        }
        if let Err(error) = verifying_key(&self.public_key) {
            problems.push(ConfigProblem::new(
                "policy.central.public_key",
                error.to_string(),
            ));
        }
        if self.interval < Duration::from_millis(100) {
            problems.push(ConfigProblem::new(
                "policy.central.interval",
                "must be at least 100ms",
            ));
        }
        problems
    }
}

/// A public key from its base64 text.
pub fn verifying_key(text: &str) -> Result<VerifyingKey, CentralError> {
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|_| CentralError::Key("not base64 (from `safegate policy keygen`)".into()))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| CentralError::Key("an Ed25519 public key is 32 bytes".into()))?;
    VerifyingKey::from_bytes(&bytes).map_err(|e| CentralError::Key(e.to_string()))
}

/// A signing key from its file (base64 of the 32-byte secret, as `keygen` writes it).
pub fn signing_key(path: &Path) -> Result<SigningKey, CentralError> {
    let text = std::fs::read_to_string(path).map_err(io(path))?;
    let bytes = BASE64
        .decode(text.trim())
        .map_err(|_| CentralError::Key(format!("{}: not base64", path.display())))?;
    let bytes: [u8; 32] = bytes
        .try_into()
        .map_err(|_| CentralError::Key(format!("{}: not 32 bytes", path.display())))?;
    Ok(SigningKey::from_bytes(&bytes))
}

/// A new key pair: (secret, public), both base64.
pub fn generate_key() -> Result<(String, String), CentralError> {
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret).map_err(|e| CentralError::Key(e.to_string()))?;
    let key = SigningKey::from_bytes(&secret);
    Ok((
        BASE64.encode(secret),
        BASE64.encode(key.verifying_key().to_bytes()),
    ))
}

/// The signed part of a bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Payload {
    /// [`FORMAT`].
    pub format: u32,
    /// Only ever goes up.
    pub version: u64,
    /// When it was made, Unix seconds.
    pub created_unix: u64,
    /// Relative path to content (base64).
    pub files: BTreeMap<String, String>,
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Envelope {
    payload: String,
    signature: String,
}

/// Makes a signed bundle of `policy_file` and the files under each of `lists` (folders
/// or files), at `version`. Paths are kept relative to the folder above the policy's
/// (so `../blocklists/...` references keep working); the policy goes to
/// [`POLICY_PATH`].
pub fn make_bundle(
    policy_file: &Path,
    lists: &[PathBuf],
    version: u64,
    key: &SigningKey,
) -> Result<Vec<u8>, CentralError> {
    let policy_file = std::path::absolute(policy_file).map_err(io(policy_file))?;
    let policy_dir = policy_file.parent().unwrap_or(Path::new("/"));
    let root = policy_dir.parent().unwrap_or(policy_dir);
    let mut files = BTreeMap::new();
    let text = std::fs::read(&policy_file).map_err(io(&policy_file))?;
    files.insert(POLICY_PATH.to_owned(), BASE64.encode(text));
    for list in lists {
        let list = std::path::absolute(list).map_err(io(list))?;
        for file in walk(&list)? {
            let relative = file
                .strip_prefix(root)
                .map_err(|_| CentralError::UnsafePath(file.display().to_string()))?;
            let name = relative.to_string_lossy().replace('\\', "/");
            let content = std::fs::read(&file).map_err(io(&file))?;
            files.insert(name, BASE64.encode(content));
        }
    }
    let created_unix = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let payload = serde_json::to_vec(&Payload {
        format: FORMAT,
        version,
        created_unix,
        files,
    })
    .map_err(|e| CentralError::Malformed(e.to_string()))?;
    let signature = key.sign(&payload);
    serde_json::to_vec(&Envelope {
        payload: BASE64.encode(&payload),
        signature: BASE64.encode(signature.to_bytes()),
    })
    .map_err(|e| CentralError::Malformed(e.to_string()))
}

/// Every file under `path` (or `path` itself), sorted.
fn walk(path: &Path) -> Result<Vec<PathBuf>, CentralError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    if meta.is_file() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut found = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(path)
        .map_err(io(path))?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .collect();
    entries.sort();
    for entry in entries {
        found.extend(walk(&entry)?);
    }
    Ok(found)
}

/// Checks the envelope's signature with `key` and reads the payload.
pub fn verify(bytes: &[u8], key: &VerifyingKey) -> Result<Payload, CentralError> {
    let envelope: Envelope =
        serde_json::from_slice(bytes).map_err(|e| CentralError::Malformed(e.to_string()))?;
    let payload = BASE64
        .decode(&envelope.payload)
        .map_err(|e| CentralError::Malformed(format!("payload: {e}")))?;
    let signature = BASE64
        .decode(&envelope.signature)
        .ok()
        .and_then(|s| <[u8; 64]>::try_from(s).ok())
        .ok_or(CentralError::BadSignature)?;
    key.verify(&payload, &Signature::from_bytes(&signature))
        .map_err(|_| CentralError::BadSignature)?;
    let payload: Payload =
        serde_json::from_slice(&payload).map_err(|e| CentralError::Malformed(e.to_string()))?;
    if payload.format != FORMAT {
        return Err(CentralError::Malformed(format!(
            "format {} (this SafeGate reads {FORMAT})",
            payload.format
        )));
    }
    if !payload.files.contains_key(POLICY_PATH) {
        return Err(CentralError::Malformed(format!("no {POLICY_PATH}")));
    }
    Ok(payload)
}

/// The policy file of the installed bundle (through `central/current`).
pub fn current_policy(central_dir: &Path) -> PathBuf {
    central_dir.join("current").join(POLICY_PATH)
}

/// The installed bundle's version, if one is installed.
pub fn installed_version(central_dir: &Path) -> Option<u64> {
    let target = std::fs::read_link(central_dir.join("current")).ok()?;
    target.to_str()?.strip_prefix('v')?.parse().ok()
}

/// The school's local section.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LocalSection {
    /// Sites the school allows, on top of the trust's policy.
    pub allow: Vec<String>,
    /// Sites the school denies.
    pub deny: Vec<String>,
}

impl LocalSection {
    /// Reads the local section's file.
    pub fn load(path: &Path) -> Result<Self, CentralError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        toml::from_str(&text).map_err(|e| CentralError::Policy(format!("{}: {e}", path.display())))
    }

    /// `policy` (TOML text) with this section's entries added to `[global]`.
    fn apply(&self, policy: &str) -> Result<String, CentralError> {
        if self.allow.is_empty() && self.deny.is_empty() {
            return Ok(policy.to_owned());
        }
        let mut doc: toml_edit::DocumentMut = policy
            .parse()
            .map_err(|e: toml_edit::TomlError| CentralError::Policy(e.to_string()))?;
        let global = doc
            .entry("global")
            .or_insert(toml_edit::table())
            .as_table_like_mut()
            .ok_or_else(|| CentralError::Policy("[global] is not a table".into()))?;
        for (key, entries) in [("allow", &self.allow), ("deny", &self.deny)] {
            let list = global
                .entry(key)
                .or_insert(toml_edit::value(toml_edit::Array::new()))
                .as_array_mut()
                .ok_or_else(|| CentralError::Policy(format!("global.{key} is not a list")))?;
            for entry in entries {
                list.push(entry.as_str());
            }
        }
        Ok(doc.to_string())
    }
}

/// A bundle's relative path made safe: plain components only.
fn safe_relative(name: &str) -> Result<PathBuf, CentralError> {
    let path = Path::new(name);
    let plain = path.components().all(|c| matches!(c, Component::Normal(_)));
    if name.is_empty() || !plain {
        return Err(CentralError::UnsafePath(name.to_owned()));
    }
    Ok(path.to_path_buf())
}

/// Installs a verified bundle into `central_dir` (see the module's documentation);
/// returns the installed policy file. Refused bundles change nothing.
pub fn install(
    payload: &Payload,
    central_dir: &Path,
    local: Option<&LocalSection>,
) -> Result<PathBuf, CentralError> {
    if let Some(installed) = installed_version(central_dir)
        && payload.version <= installed
    {
        return Err(CentralError::NotNewer {
            offered: payload.version,
            installed,
        });
    }
    std::fs::create_dir_all(central_dir).map_err(io(central_dir))?;
    let name = format!("v{}", payload.version);
    let staging = central_dir.join(format!("{name}.partial"));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    let written = write_files(payload, &staging, local)
        .and_then(|()| check_compiles(&staging.join(POLICY_PATH)));
    if let Err(error) = written {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(error);
    }
    let done = central_dir.join(&name);
    if done.exists() {
        std::fs::remove_dir_all(&done).map_err(io(&done))?;
    }
    std::fs::rename(&staging, &done).map_err(io(&done))?;
    let link = central_dir.join("current.new");
    let _ = std::fs::remove_file(&link);
    std::os::unix::fs::symlink(&name, &link).map_err(io(&link))?;
    let current = central_dir.join("current");
    std::fs::rename(&link, &current).map_err(io(&current))?;
    prune(central_dir, payload.version);
    Ok(current_policy(central_dir))
}

fn write_files(
    payload: &Payload,
    staging: &Path,
    local: Option<&LocalSection>,
) -> Result<(), CentralError> {
    for (name, content) in &payload.files {
        let relative = safe_relative(name)?;
        let mut bytes = BASE64
            .decode(content)
            .map_err(|e| CentralError::Malformed(format!("{name}: {e}")))?;
        if name == POLICY_PATH
            && let Some(local) = local
        {
            let text = String::from_utf8(bytes)
                .map_err(|_| CentralError::Policy("the policy is not UTF-8".into()))?;
            bytes = local.apply(&text)?.into_bytes();
        }
        let path = staging.join(relative);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        std::fs::write(&path, bytes).map_err(io(&path))?;
    }
    Ok(())
}

fn check_compiles(policy: &Path) -> Result<(), CentralError> {
    safegate_policy::Policy::load(policy)
        .map(drop)
        .map_err(|e| CentralError::Policy(error_chain(&e)))
}

fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Removes installed versions older than the one before `current`.
fn prune(central_dir: &Path, current: u64) {
    let Ok(entries) = std::fs::read_dir(central_dir) else {
        return;
    };
    let mut versions: Vec<u64> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().to_str()?.strip_prefix('v')?.parse().ok())
        .filter(|&v| v < current)
        .collect();
    versions.sort_unstable();
    versions.pop();
    for version in versions {
        let _ = std::fs::remove_dir_all(central_dir.join(format!("v{version}")));
    }
}

#[cfg(test)]
mod tests;
