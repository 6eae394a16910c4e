#![allow(clippy::unwrap_used)]

use super::*;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn key() -> SigningKey {
    SigningKey::from_bytes(&[7u8; 32])
}

/// The shipped policy and lists as bundle `version`.
fn shipped(version: u64) -> Vec<u8> {
    make_bundle(
        &repo().join("config/policy.toml"),
        &[repo().join("blocklists")],
        version,
        &key(),
    )
    .unwrap()
}

/// `payload` signed with the test key.
fn signed(payload: &Payload) -> Vec<u8> {
    let bytes = serde_json::to_vec(payload).unwrap();
    serde_json::to_vec(&Envelope {
        payload: BASE64.encode(&bytes),
        signature: BASE64.encode(key().sign(&bytes).to_bytes()),
    })
    .unwrap()
}

#[test]
fn a_signed_bundle_verifies_only_with_its_key_and_untouched() {
    let bundle = shipped(3);
    let payload = verify(&bundle, &key().verifying_key()).unwrap();
    assert_eq!(payload.version, 3);
    assert!(payload.files.contains_key("blocklists/gambling.txt"));
    let other = SigningKey::from_bytes(&[8u8; 32]).verifying_key();
    assert!(matches!(
        verify(&bundle, &other),
        Err(CentralError::BadSignature)
    ));
    // One changed byte of the payload.
    let mut envelope: Envelope = serde_json::from_slice(&bundle).unwrap();
    let mut payload = BASE64.decode(&envelope.payload).unwrap();
    let at = payload.len() / 2;
    payload[at] ^= 1;
    envelope.payload = BASE64.encode(payload);
    let tampered = serde_json::to_vec(&envelope).unwrap();
    assert!(matches!(
        verify(&tampered, &key().verifying_key()),
        Err(CentralError::BadSignature)
    ));
}

#[test]
fn older_versions_and_broken_policies_are_refused_and_the_installed_one_stays() {
    let dir = tempfile::tempdir().unwrap();
    let central = dir.path().join("central");
    let local = LocalSection {
        allow: vec!["our-school-blog.example".into()],
        deny: vec![],
    };
    let v2 = verify(&shipped(2), &key().verifying_key()).unwrap();
    let policy = install(&v2, &central, Some(&local)).unwrap();
    assert_eq!(installed_version(&central), Some(2));
    let text = std::fs::read_to_string(&policy).unwrap();
    assert!(
        text.contains("our-school-blog.example"),
        "the local allow-list is kept"
    );
    // Not newer.
    let v1 = verify(&shipped(1), &key().verifying_key()).unwrap();
    assert!(matches!(
        install(&v1, &central, None),
        Err(CentralError::NotNewer {
            offered: 1,
            installed: 2
        })
    ));
    // Newer, but its policy does not compile.
    let mut broken = v2.clone();
    broken.version = 3;
    broken.files.insert(
        POLICY_PATH.into(),
        BASE64.encode("[categories.x]\nsources = [{ format = \"nonsense\" }]\n"),
    );
    let broken = verify(&signed(&broken), &key().verifying_key()).unwrap();
    assert!(matches!(
        install(&broken, &central, None),
        Err(CentralError::Policy(_))
    ));
    // A path out of the bundle.
    let mut escaping = v2.clone();
    escaping.version = 4;
    escaping
        .files
        .insert("../../etc/evil".into(), BASE64.encode("x"));
    assert!(matches!(
        install(&escaping, &central, None),
        Err(CentralError::UnsafePath(_))
    ));
    assert_eq!(installed_version(&central), Some(2));
    assert_eq!(std::fs::read_to_string(&policy).unwrap(), text);
    // A good newer one replaces it.
    let v5 = verify(&shipped(5), &key().verifying_key()).unwrap();
    install(&v5, &central, None).unwrap();
    assert_eq!(installed_version(&central), Some(5));
    assert!(!central.join("v3.partial").exists() && !central.join("v4.partial").exists());
}

#[test]
fn keys_round_trip_and_bad_configuration_is_named() {
    let (secret, public) = generate_key().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("trust.key");
    std::fs::write(&file, secret).unwrap();
    let key = signing_key(&file).unwrap();
    assert_eq!(verifying_key(&public).unwrap(), key.verifying_key());
    let config = CentralConfig {
        url: "ftp://x".into(),
        public_key: "short".into(),
        ..CentralConfig::default()
    };
    let keys: Vec<_> = config.validate().into_iter().map(|p| p.key).collect();
    assert_eq!(keys, ["policy.central.url", "policy.central.public_key"]);
}
