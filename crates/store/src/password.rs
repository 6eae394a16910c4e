//! Password hashing for SafeGate's users: Argon2id in PHC string form
//! (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`), the form stored in the user
//! table and accepted from imports.
//!
//! New hashes use OWASP's recommended Argon2id parameters (m = 19 MiB, t = 2, p = 1),
//! with a random 16-byte salt from the operating system. One hash costs about 20–50 ms
//! of one core and 19 MiB of memory; verifying costs the same, so the proxy caches
//! successful log-ins (keyed on the user's generation).
//!
//! Verification reads the parameters from the stored hash, so hashes made elsewhere
//! with other Argon2 parameters keep working. [`check_phc`] refuses parameters beyond
//! [`MAX_M_COST_KIB`], [`MAX_T_COST`] and [`MAX_P_COST`]: an imported hash that asked
//! for gigabytes would make every log-in of that user a denial of service.
//!
//! Checks made on behalf of a client go through one [`CheckPool`], which bounds how
//! many run and wait at once across the whole process.

use argon2::{Algorithm, Argon2, Params, PasswordHash, PasswordHasher, PasswordVerifier, Version};

mod check_pool;

pub use self::check_pool::{Busy, CheckPool, DEFAULT_CONCURRENCY, DEFAULT_MAX_WAITING};

/// Shortest password accepted, in characters.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// Longest password accepted, in bytes (a guard against pasting a file by mistake).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Most memory an accepted hash may ask for, in KiB (256 MiB).
pub const MAX_M_COST_KIB: u32 = 256 * 1024;

/// Most passes an accepted hash may ask for.
pub const MAX_T_COST: u32 = 16;

/// Most lanes an accepted hash may ask for.
pub const MAX_P_COST: u32 = 16;

/// Why a password or a password hash was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    /// The password is empty.
    #[error("the password is empty")]
    Empty,
    /// The password is shorter than [`MIN_PASSWORD_CHARS`].
    #[error(
        "the password is too short ({chars} characters; at least {MIN_PASSWORD_CHARS} are needed)"
    )]
    TooShort {
        /// Its length in characters.
        chars: usize,
    },
    /// The password is longer than [`MAX_PASSWORD_BYTES`].
    #[error("the password is too long ({bytes} bytes; at most {MAX_PASSWORD_BYTES})")]
    TooLong {
        /// Its length in bytes.
        bytes: usize,
    },
    /// A stored or imported hash is not an Argon2 PHC string SafeGate accepts.
    #[error("not an Argon2 password hash ($argon2id$v=19$m=...,t=...,p=...$salt$hash): {why}")]
    NotArgon2 {
        /// What is wrong with it.
        why: String,
    },
    /// Hashing failed (the operating system's random source failed).
    #[error("cannot hash the password: {0}")]
    Hashing(String),
}

/// Checks a password against SafeGate's rules (not empty, at least
/// [`MIN_PASSWORD_CHARS`] characters, at most [`MAX_PASSWORD_BYTES`] bytes) without
/// hashing it.
pub fn check_password(password: &str) -> Result<(), PasswordError> {
    if password.is_empty() {
        return Err(PasswordError::Empty);
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong {
            bytes: password.len(),
        });
    }
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort { chars });
    }
    Ok(())
}

/// The hasher for new passwords: Argon2id v19 with OWASP's parameters.
fn hasher() -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, Params::DEFAULT)
}

/// Hashes a password (after [`check_password`]) with Argon2id and a random salt;
/// returns the PHC string. Costs about 20–50 ms of one core.
pub fn hash_password(password: &str) -> Result<String, PasswordError> {
    check_password(password)?;
    hasher()
        .hash_password(password.as_bytes())
        .map(|hash| hash.to_string())
        .map_err(|err| PasswordError::Hashing(err.to_string()))
}

/// Whether `password` matches the PHC string `phc`. False for a wrong password and for
/// a hash that is not an acceptable Argon2 hash (never panics). Constant-time in the
/// comparison; costs one Argon2 computation with the hash's parameters.
pub fn verify_password(phc: &str, password: &str) -> bool {
    let Ok(hash) = parsed(phc) else {
        return false;
    };
    hasher().verify_password(password.as_bytes(), &hash).is_ok()
}

/// Checks that `phc` is an Argon2 (id, i or d) PHC string with a salt, an output and
/// parameters within SafeGate's limits: the check applied to every stored and
/// imported hash.
pub fn check_phc(phc: &str) -> Result<(), PasswordError> {
    parsed(phc).map(|_| ())
}

fn parsed(phc: &str) -> Result<PasswordHash, PasswordError> {
    let not = |why: String| PasswordError::NotArgon2 { why };
    if !phc.starts_with("$argon2") {
        return Err(not("it does not start with $argon2".to_owned()));
    }
    let hash = PasswordHash::new(phc).map_err(|e| not(e.to_string()))?;
    Algorithm::new(hash.algorithm.as_str()).map_err(|e| not(e.to_string()))?;
    if let Some(version) = hash.version {
        Version::try_from(version).map_err(|e| not(format!("version {version}: {e}")))?;
    }
    if hash.salt.is_none() || hash.hash.is_none() {
        return Err(not("it has no salt or no hash part".to_owned()));
    }
    let params = Params::try_from(&hash).map_err(|e| not(e.to_string()))?;
    if params.m_cost() > MAX_M_COST_KIB
        || params.t_cost() > MAX_T_COST
        || params.p_cost() > MAX_P_COST
    {
        return Err(not(format!(
            "its parameters m={},t={},p={} are beyond m={MAX_M_COST_KIB},t={MAX_T_COST},p={MAX_P_COST} \
             (every log-in would cost too much)",
            params.m_cost(),
            params.t_cost(),
            params.p_cost()
        )));
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn hash_and_verify_roundtrip() {
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify_password(&phc, "correct horse"));
        assert!(!verify_password(&phc, "correct horsE"));
        assert!(!verify_password(&phc, ""));
        check_phc(&phc).unwrap();
        // A fresh salt every time.
        assert_ne!(phc, hash_password("correct horse").unwrap());
    }

    #[test]
    fn short_and_empty_passwords_are_refused() {
        assert_eq!(hash_password(""), Err(PasswordError::Empty));
        assert_eq!(
            hash_password("seven77"),
            Err(PasswordError::TooShort { chars: 7 })
        );
        // Characters, not bytes: eight accented letters are enough.
        check_password("éééééééé").unwrap();
        assert_eq!(
            check_password("ééé"),
            Err(PasswordError::TooShort { chars: 3 })
        );
        assert!(matches!(
            check_password(&"x".repeat(MAX_PASSWORD_BYTES + 1)),
            Err(PasswordError::TooLong { .. })
        ));
        let message = PasswordError::TooShort { chars: 5 }.to_string();
        assert!(message.contains("at least 8"), "{message}");
    }

    #[test]
    fn hashes_made_elsewhere_verify_and_garbage_does_not() {
        // Another tool's Argon2id hash of "password123" with cheaper parameters.
        let salt = b"0123456789abcdef";
        let params = Params::new(8192, 1, 1, None).unwrap();
        let other = Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
            .hash_password_with_salt(b"password123", salt)
            .unwrap()
            .to_string();
        assert!(
            other.starts_with("$argon2id$v=19$m=8192,t=1,p=1$"),
            "{other}"
        );
        check_phc(&other).unwrap();
        assert!(verify_password(&other, "password123"));
        assert!(!verify_password(&other, "password124"));

        for bad in [
            "",
            "password123",
            "$2b$12$abcdefghijklmnopqrstuuQ8Jx4vN8J2YpZ1lC3lJ0xK7p7lR5q6G", // bcrypt
            "$argon2id$v=19$m=19456,t=2,p=1",                               // no salt or hash
            "$argon2x$v=19$m=19456,t=2,p=1$c2FsdHNhbHQ$aGFzaGhhc2g",
            "$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g",
        ] {
            assert!(check_phc(bad).is_err(), "{bad:?} accepted");
            assert!(!verify_password(bad, "password123"));
        }
        let error = check_phc("$argon2id$v=19$m=4194304,t=2,p=1$c2FsdHNhbHRzYWx0$aGFzaGhhc2hoYXNoaGFzaGhhc2hoYXNoaGFzaGhhc2g")
            .unwrap_err()
            .to_string();
        assert!(error.contains("m=4194304"), "{error}");
    }
}
