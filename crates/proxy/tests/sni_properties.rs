//! Property tests of the ClientHello reader: arbitrary bytes and cut or re-fragmented
//! ClientHellos never make it panic, and a real ClientHello (from rustls) gives back
//! the name it was made for however the client splits it into records.

#![allow(clippy::unwrap_used, clippy::expect_used, missing_docs)]

use std::sync::Arc;

use proptest::prelude::*;
use safegate_proxy::sni::{self, HelloError};

/// A rustls ClientHello naming `name`, as it goes on the wire.
fn client_hello(name: &str) -> Vec<u8> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(rustls::RootCertStore::empty())
        .with_no_client_auth();
    let server = rustls::pki_types::ServerName::try_from(name.to_owned()).unwrap();
    let mut connection = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
    let mut wire = Vec::new();
    while connection.wants_write() {
        connection.write_tls(&mut wire).unwrap();
    }
    wire
}

/// The same handshake bytes carried in TLS records of at most `sizes[i]` bytes each.
fn refragment(wire: &[u8], sizes: &[usize]) -> Vec<u8> {
    let body = &wire[5..5 + usize::from(u16::from_be_bytes([wire[3], wire[4]]))];
    let mut out = Vec::new();
    let mut rest = body;
    let mut size = sizes.iter().cycle();
    while !rest.is_empty() {
        let take = (*size.next().unwrap_or(&1)).clamp(1, rest.len());
        let (chunk, tail) = rest.split_at(take);
        out.extend_from_slice(&[22, 3, 1]);
        out.extend_from_slice(&u16::try_from(chunk.len()).unwrap().to_be_bytes());
        out.extend_from_slice(chunk);
        rest = tail;
    }
    out
}

/// A host name rustls accepts: lower-case labels.
fn host_name() -> impl Strategy<Value = String> {
    prop::collection::vec("[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?", 1..5).prop_map(|labels| {
        let mut name = labels.join(".");
        name.push_str(".test");
        name
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(500))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
        let _ = sni::parse(&bytes);
    }

    #[test]
    fn handshake_looking_bytes_never_panic(tail in prop::collection::vec(any::<u8>(), 0..1024)) {
        // Past the record and message type checks, into the length fields.
        let mut bytes = vec![22, 3, 1];
        bytes.extend_from_slice(&tail);
        let _ = sni::parse(&bytes);
    }

    #[test]
    fn a_real_hello_gives_its_name_in_any_fragmentation(
        name in host_name(),
        sizes in prop::collection::vec(1usize..300, 1..6),
    ) {
        let wire = client_hello(&name);
        let whole = sni::parse(&wire).unwrap().unwrap();
        prop_assert_eq!(whole.server_name.as_deref(), Some(name.as_str()));
        let split = refragment(&wire, &sizes);
        let hello = sni::parse(&split).unwrap().unwrap();
        prop_assert_eq!(hello.server_name.as_deref(), Some(name.as_str()));
        prop_assert_eq!(hello.wire_len, split.len());
    }

    #[test]
    fn a_cut_hello_asks_for_more_and_a_damaged_one_is_refused_cleanly(
        name in host_name(),
        cut in any::<prop::sample::Index>(),
        flip in any::<prop::sample::Index>(),
        bits in 1u8..=255,
    ) {
        let wire = client_hello(&name);
        let at = cut.index(wire.len());
        prop_assert_eq!(sni::parse(&wire[..at]), Ok(None), "cut at {}", at);
        let mut damaged = wire.clone();
        let at = flip.index(damaged.len());
        damaged[at] ^= bits;
        match sni::parse(&damaged) {
            Ok(_) | Err(HelloError::NotTls | HelloError::NotClientHello | HelloError::TooLarge
                | HelloError::Malformed(_) | HelloError::BadServerName) => {}
        }
    }
}
