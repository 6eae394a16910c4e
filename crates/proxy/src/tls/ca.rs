//! The school's certificate authority: created once by `safegate ca init`, kept in
//! `data_dir`, installed on school devices, and used by the proxy to sign the
//! certificates it shows for the sites it decrypts.
//!
//! Files: `data_dir/ca/safegate-ca.pem` (the certificate, for devices) and
//! `data_dir/ca/safegate-ca.key` (the private key, PKCS#8 PEM). The key file is
//! created with mode 0600 and written atomically (a temporary file in the same
//! folder, synced, then renamed), and the proxy refuses to use a key that others can
//! read. The key is never logged and never printed: `safegate ca export` prints only
//! the certificate.
//!
//! The CA key is an ECDSA P-256 key (fast to sign with, accepted everywhere); the
//! certificate is valid for ten years and may sign only leaf certificates
//! (path length 0).

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use jiff::ToSpan;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::CertificateDer;

/// Folder inside `data_dir` that holds the CA.
pub const CA_DIR: &str = "ca";
/// The CA certificate (PEM), the file to install on devices.
pub const CA_CERT_FILE: &str = "safegate-ca.pem";
/// The CA private key (PKCS#8 PEM), mode 0600.
pub const CA_KEY_FILE: &str = "safegate-ca.key";

/// Why the CA could not be created, loaded or used.
#[derive(Debug, thiserror::Error)]
pub enum CaError {
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// What the operating system said.
        source: std::io::Error,
    },
    /// The key file can be read by other users.
    #[error(
        "{}: the CA key can be read by other users (mode {mode:o}); run `chmod 600` on it",
        path.display()
    )]
    KeyReadable {
        /// The key file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Only one of the two files exists.
    #[error("{}: found without {}; restore it or remove both and run `safegate ca init`", present.display(), missing.display())]
    Incomplete {
        /// The file that exists.
        present: PathBuf,
        /// The file that does not.
        missing: PathBuf,
    },
    /// The files exist but are not a usable certificate and key.
    #[error("{}: {message}", path.display())]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong (never the key's contents).
        message: String,
    },
    /// Creating or signing a certificate failed.
    #[error("certificate generation failed: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the key or the configuration.
    #[error("TLS set-up failed: {0}")]
    Tls(String),
}

/// What `SchoolCa::init` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CaInit {
    /// A new CA was created.
    Created,
    /// A CA existed already and was left alone.
    Existing,
}

/// The school CA, ready to sign leaf certificates.
pub struct SchoolCa {
    issuer: Issuer<'static, KeyPair>,
    cert_der: CertificateDer<'static>,
    cert_pem: String,
}

impl std::fmt::Debug for SchoolCa {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the key.
        f.debug_struct("SchoolCa").finish_non_exhaustive()
    }
}

/// Where the CA's files are for `data_dir`: (certificate, key).
pub fn ca_paths(data_dir: &Path) -> (PathBuf, PathBuf) {
    let dir = data_dir.join(CA_DIR);
    (dir.join(CA_CERT_FILE), dir.join(CA_KEY_FILE))
}

impl SchoolCa {
    /// Creates the CA in `data_dir` unless one exists there; `name` goes into its
    /// subject (e.g. the school's name).
    pub fn init(data_dir: &Path, name: &str) -> Result<CaInit, CaError> {
        if Self::load(data_dir)?.is_some() {
            return Ok(CaInit::Existing);
        }
        let (cert_path, key_path) = ca_paths(data_dir);
        let dir = data_dir.join(CA_DIR);
        fs::create_dir_all(&dir).map_err(|source| CaError::Io {
            path: dir.clone(),
            source,
        })?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let mut params = CertificateParams::default();
        let mut subject = DistinguishedName::new();
        subject.push(DnType::CommonName, format!("{name} SafeGate CA"));
        subject.push(DnType::OrganizationName, name);
        params.distinguished_name = subject;
        params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        set_validity(&mut params, -1, 3650);
        let cert = params.self_signed(&key)?;
        // The key first: a certificate without its key is reported as incomplete.
        write_atomically(&key_path, key.serialize_pem().as_bytes(), 0o600)?;
        write_atomically(&cert_path, cert.pem().as_bytes(), 0o644)?;
        Ok(CaInit::Created)
    }

    /// Loads the CA from `data_dir`; `None` when there is none (nothing is decrypted).
    pub fn load(data_dir: &Path) -> Result<Option<Self>, CaError> {
        let (cert_path, key_path) = ca_paths(data_dir);
        match (cert_path.exists(), key_path.exists()) {
            (false, false) => return Ok(None),
            (true, false) => {
                return Err(CaError::Incomplete {
                    present: cert_path,
                    missing: key_path,
                });
            }
            (false, true) => {
                return Err(CaError::Incomplete {
                    present: key_path,
                    missing: cert_path,
                });
            }
            (true, true) => {}
        }
        let mode = fs::metadata(&key_path)
            .map_err(|source| CaError::Io {
                path: key_path.clone(),
                source,
            })?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(CaError::KeyReadable {
                path: key_path,
                mode: mode & 0o777,
            });
        }
        let read = |path: &Path| {
            fs::read_to_string(path).map_err(|source| CaError::Io {
                path: path.to_path_buf(),
                source,
            })
        };
        let cert_pem = read(&cert_path)?;
        let key = KeyPair::from_pem(&read(&key_path)?).map_err(|_| CaError::Invalid {
            path: key_path.clone(),
            message: "not a PKCS#8 PEM private key".to_owned(),
        })?;
        let invalid_cert = |message: &str| CaError::Invalid {
            path: cert_path.clone(),
            message: message.to_owned(),
        };
        let cert_der = rustls::pki_types::pem::PemObject::from_pem_slice(cert_pem.as_bytes())
            .map_err(|_| invalid_cert("not a PEM certificate"))?;
        let issuer = Issuer::from_ca_cert_pem(&cert_pem, key)
            .map_err(|_| invalid_cert("not a CA certificate"))?;
        Ok(Some(Self {
            issuer,
            cert_der,
            cert_pem,
        }))
    }

    /// The certificate in PEM, as installed on devices.
    pub fn cert_pem(&self) -> &str {
        &self.cert_pem
    }

    /// The certificate in DER (for devices that want a `.cer`/`.crt` in binary).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert_der
    }

    /// Signs a certificate for `host` (a DNS name or an IP address) over `leaf_key`,
    /// valid from yesterday for a year.
    pub fn sign_leaf(
        &self,
        host: &str,
        leaf_key: &KeyPair,
    ) -> Result<CertificateDer<'static>, CaError> {
        let mut params = CertificateParams::new(vec![host.to_owned()])?;
        params.distinguished_name = DistinguishedName::new();
        params.distinguished_name.push(DnType::CommonName, host);
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        set_validity(&mut params, -1, 365);
        Ok(params.signed_by(leaf_key, &self.issuer)?.der().clone())
    }
}

/// Valid from `from_days` to `until_days` days from today (UTC).
fn set_validity(params: &mut CertificateParams, from_days: i32, until_days: i32) {
    let today = jiff::Timestamp::now()
        .to_zoned_datetime(jiff::tz::TimeZone::UTC)
        .date();
    let day = |offset: i32| {
        let date = today.checked_add(offset.days()).unwrap_or(today);
        rcgen::date_time_ymd(
            i32::from(date.year()),
            u8::try_from(date.month()).unwrap_or(1),
            u8::try_from(date.day()).unwrap_or(1),
        )
    };
    params.not_before = day(from_days);
    params.not_after = day(until_days);
}

/// Writes `bytes` to `path` through a temporary file created with `mode`, synced and
/// renamed over `path`, so a reader never sees half a file.
fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), CaError> {
    let temp = path.with_extension("tmp");
    let io_error = |source| CaError::Io {
        path: path.to_path_buf(),
        source,
    };
    let _ = fs::remove_file(&temp);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&temp)
        .map_err(io_error)?;
    file.write_all(bytes).map_err(io_error)?;
    file.sync_all().map_err(io_error)?;
    drop(file);
    fs::rename(&temp, path).map_err(io_error)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn init_creates_a_private_key_and_loads_back() {
        let dir = tempfile::tempdir().unwrap();
        assert!(SchoolCa::load(dir.path()).unwrap().is_none());
        assert_eq!(
            SchoolCa::init(dir.path(), "Test School").unwrap(),
            CaInit::Created
        );
        let (cert, key) = ca_paths(dir.path());
        assert_eq!(
            fs::metadata(&key).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let pem = fs::read_to_string(&cert).unwrap();
        assert!(pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert!(!pem.contains("PRIVATE KEY"));
        let ca = SchoolCa::load(dir.path()).unwrap().unwrap();
        assert_eq!(ca.cert_pem(), pem);
        // A second init keeps the CA that devices already trust.
        assert_eq!(
            SchoolCa::init(dir.path(), "Test School").unwrap(),
            CaInit::Existing
        );
        assert_eq!(fs::read_to_string(&cert).unwrap(), pem);
        let leaf_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        assert!(
            !ca.sign_leaf("www.example.org", &leaf_key)
                .unwrap()
                .is_empty()
        );
        assert!(!ca.sign_leaf("192.0.2.1", &leaf_key).unwrap().is_empty());
    }

    #[test]
    fn a_readable_key_or_a_missing_half_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        SchoolCa::init(dir.path(), "Test").unwrap();
        let (cert, key) = ca_paths(dir.path());
        fs::set_permissions(&key, fs::Permissions::from_mode(0o644)).unwrap();
        let error = SchoolCa::load(dir.path()).unwrap_err();
        assert!(matches!(error, CaError::KeyReadable { .. }), "{error}");
        assert!(error.to_string().contains("chmod 600"));
        fs::remove_file(&key).unwrap();
        let error = SchoolCa::load(dir.path()).unwrap_err();
        assert!(matches!(error, CaError::Incomplete { .. }), "{error}");
        fs::remove_file(&cert).unwrap();
        assert!(SchoolCa::load(dir.path()).unwrap().is_none());
    }
}
