//! The server name (SNI) of a TLS ClientHello, read without terminating TLS.
//!
//! Transparent HTTPS sees a client's TLS bytes where an explicit proxy would see a
//! CONNECT: the only name on offer is the `server_name` extension of the ClientHello
//! (RFC 6066 §3), which travels in clear text in every TLS version up to 1.3. `parse`
//! is called on the bytes received so far, again after every read, and says whether
//! the ClientHello is complete and which host name it carries.
//!
//! Guarantees: `parse` never panics and never reads out of bounds, whatever the input
//! (every length is checked against what is left, as fuzz-style tests assert); it
//! never asks for more than [`MAX_CLIENT_HELLO`] bytes, so a caller that stops reading
//! there never buffers more; it allocates only for the handshake message when the
//! ClientHello is split over several records, and for the returned name. A
//! ClientHello split over several TLS records is reassembled.
//!
//! Limits: with Encrypted Client Hello the clear-text name is the provider's public
//! name (e.g. `cloudflare-ech.com`), which is all a proxy that does not decrypt can
//! see; the real name is sealed. [`ClientHello::encrypted_client_hello`] says when
//! that is the case, so that the outer name is decided rather than taken for domain
//! fronting.

use std::borrow::Cow;

/// Most bytes a ClientHello may take on the wire, record headers included: one full
/// TLS record (2^14 bytes of payload plus its 5-byte header). Real ClientHellos are
/// a few hundred bytes to about 2 KiB (post-quantum key shares).
pub const MAX_CLIENT_HELLO: usize = 16 * 1024 + RECORD_HEADER;

/// Length of a TLS record header: type, version (2), length (2).
const RECORD_HEADER: usize = 5;
/// Largest record payload a TLS peer may send (RFC 8446 §5.1).
const MAX_RECORD_PAYLOAD: usize = 16 * 1024;
/// Record content type of handshake messages.
const HANDSHAKE: u8 = 22;
/// Handshake message type of a ClientHello.
const CLIENT_HELLO: u8 = 1;
/// Extension number of `server_name`.
const SERVER_NAME: u16 = 0;
/// Extension number of `encrypted_client_hello` (RFC 9849 / draft-ietf-tls-esni).
const ENCRYPTED_CLIENT_HELLO: u16 = 0xfe0d;
/// `NameType` of a DNS host name inside `server_name`.
const HOST_NAME: u8 = 0;
/// Longest DNS name (253 characters, 255 with a trailing dot).
const MAX_HOST_NAME: usize = 255;

/// What a complete ClientHello said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The host name the client asked for, lower-cased; none when the client sent no
    /// `server_name` extension (connections to an IP address, old clients).
    pub server_name: Option<String>,
    /// The ClientHello offers Encrypted Client Hello (`encrypted_client_hello`
    /// extension): `server_name` is then the provider's public (outer) name.
    pub encrypted_client_hello: bool,
    /// Bytes from the start of the buffer to the end of the record that completed the
    /// ClientHello.
    pub wire_len: usize,
}

/// Why the bytes are not a ClientHello SafeGate can decide on.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HelloError {
    /// The first bytes are not a TLS handshake record (plain HTTP on port 443, SSLv2).
    #[error("not TLS: the connection did not start with a TLS handshake record")]
    NotTls,
    /// A TLS handshake, but its first message is not a ClientHello.
    #[error("the first TLS handshake message is not a ClientHello")]
    NotClientHello,
    /// The ClientHello would be longer than [`MAX_CLIENT_HELLO`].
    #[error("the TLS ClientHello is larger than {MAX_CLIENT_HELLO} bytes")]
    TooLarge,
    /// A length or field does not add up.
    #[error("malformed TLS ClientHello: {0}")]
    Malformed(&'static str),
    /// The `server_name` extension holds something that is not a host name.
    #[error("the TLS server name is not a valid host name")]
    BadServerName,
}

/// Parses the start of a TLS connection. `Ok(None)`: the ClientHello is not complete
/// yet, read more (at most up to [`MAX_CLIENT_HELLO`] bytes in all); `Ok(Some(_))`: it
/// is complete; `Err(_)`: it is not a usable ClientHello, and more bytes would not
/// change that.
pub fn parse(buf: &[u8]) -> Result<Option<ClientHello>, HelloError> {
    let mut pos = 0;
    // The handshake message so far: borrowed while it sits in one record.
    let mut message: Cow<'_, [u8]> = Cow::Borrowed(&[]);
    loop {
        let Some(header) = buf.get(pos..pos + RECORD_HEADER) else {
            return check_prefix(buf.get(pos..).unwrap_or_default(), pos == 0).map(|()| None);
        };
        let (content_type, major, length) = (
            header[0],
            header[1],
            usize::from(u16::from_be_bytes([header[3], header[4]])),
        );
        if content_type != HANDSHAKE || major != 3 {
            return Err(if pos == 0 {
                HelloError::NotTls
            } else {
                HelloError::Malformed("a non-handshake record interrupts the ClientHello")
            });
        }
        if length == 0 || length > MAX_RECORD_PAYLOAD {
            return Err(HelloError::Malformed("record length out of range"));
        }
        let end = pos + RECORD_HEADER + length;
        if end > MAX_CLIENT_HELLO {
            return Err(HelloError::TooLarge);
        }
        // What has arrived of this record: all of it, or the start.
        let complete = buf.len() >= end;
        let fragment = buf
            .get(pos + RECORD_HEADER..end.min(buf.len()))
            .unwrap_or_default();
        message = if message.is_empty() {
            Cow::Borrowed(fragment)
        } else {
            let mut joined = message.into_owned();
            joined.extend_from_slice(fragment);
            Cow::Owned(joined)
        };
        // The handshake header: type (1), length (3); checked as soon as it is there.
        if let Some(head) = message.get(..4) {
            if head[0] != CLIENT_HELLO {
                return Err(HelloError::NotClientHello);
            }
            let body_len =
                (usize::from(head[1]) << 16) | (usize::from(head[2]) << 8) | usize::from(head[3]);
            // The message in as few records as possible must fit.
            let message_len = 4 + body_len;
            if message_len + RECORD_HEADER * message_len.div_ceil(MAX_RECORD_PAYLOAD)
                > MAX_CLIENT_HELLO
            {
                return Err(HelloError::TooLarge);
            }
            if complete && let Some(body) = message.get(4..message_len) {
                let (server_name, encrypted_client_hello) = server_name(body)?;
                return Ok(Some(ClientHello {
                    server_name,
                    encrypted_client_hello,
                    wire_len: end,
                }));
            }
        }
        if !complete {
            return Ok(None);
        }
        pos = end;
    }
}

/// A partial record header can already show that this is not TLS.
fn check_prefix(partial: &[u8], first: bool) -> Result<(), HelloError> {
    match partial {
        [] => Ok(()),
        [content_type, rest @ ..] => {
            if *content_type != HANDSHAKE || rest.first().is_some_and(|major| *major != 3) {
                Err(if first {
                    HelloError::NotTls
                } else {
                    HelloError::Malformed("a non-handshake record interrupts the ClientHello")
                })
            } else {
                Ok(())
            }
        }
    }
}

/// Reads fields front to back; every read checks what is left.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], HelloError> {
        let (taken, rest) = self
            .rest
            .split_at_checked(n)
            .ok_or(HelloError::Malformed(what))?;
        self.rest = rest;
        Ok(taken)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, HelloError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, HelloError> {
        let bytes = self.take(2, what)?;
        Ok(u16::from_be_bytes([bytes[0], bytes[1]]))
    }

    /// A vector with a one-byte length.
    fn vec8(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let len = self.u8(what)?;
        self.take(usize::from(len), what)
    }

    /// A vector with a two-byte length.
    fn vec16(&mut self, what: &'static str) -> Result<&'a [u8], HelloError> {
        let len = self.u16(what)?;
        self.take(usize::from(len), what)
    }

    fn is_empty(&self) -> bool {
        self.rest.is_empty()
    }
}

/// The host name in a ClientHello body (RFC 8446 §4.1.2, RFC 5246 §7.4.1.2), and
/// whether it offers Encrypted Client Hello.
fn server_name(body: &[u8]) -> Result<(Option<String>, bool), HelloError> {
    let mut hello = Fields { rest: body };
    let version = hello.u16("version")?;
    if version >> 8 != 3 {
        return Err(HelloError::Malformed("unknown protocol version"));
    }
    hello.take(32, "random")?;
    if hello.vec8("session id")?.len() > 32 {
        return Err(HelloError::Malformed("session id longer than 32 bytes"));
    }
    let suites = hello.vec16("cipher suites")?;
    if suites.is_empty() || suites.len() % 2 != 0 {
        return Err(HelloError::Malformed("cipher suite list"));
    }
    if hello.vec8("compression methods")?.is_empty() {
        return Err(HelloError::Malformed("no compression method"));
    }
    if hello.is_empty() {
        // A ClientHello without extensions (SSL 3.0 style) has no name.
        return Ok((None, false));
    }
    let mut extensions = Fields {
        rest: hello.vec16("extensions")?,
    };
    if !hello.is_empty() {
        return Err(HelloError::Malformed("bytes after the extensions"));
    }
    let mut found = None;
    let mut encrypted = false;
    while !extensions.is_empty() {
        let kind = extensions.u16("extension type")?;
        let data = extensions.vec16("extension data")?;
        if kind == SERVER_NAME {
            if found.is_some() {
                return Err(HelloError::Malformed("two server_name extensions"));
            }
            found = Some(host_name(data)?);
        } else if kind == ENCRYPTED_CLIENT_HELLO {
            encrypted = true;
        }
    }
    Ok((found.flatten(), encrypted))
}

/// The `host_name` entry of a `server_name` extension (RFC 6066 §3).
fn host_name(data: &[u8]) -> Result<Option<String>, HelloError> {
    let mut extension = Fields { rest: data };
    if extension.is_empty() {
        return Ok(None);
    }
    let mut list = Fields {
        rest: extension.vec16("server name list")?,
    };
    if !extension.is_empty() {
        return Err(HelloError::Malformed("bytes after the server name list"));
    }
    let mut name = None;
    while !list.is_empty() {
        let kind = list.u8("server name type")?;
        let value = list.vec16("server name")?;
        if kind != HOST_NAME {
            continue;
        }
        if name.is_some() {
            return Err(HelloError::Malformed("two host names"));
        }
        name = Some(valid_host_name(value)?);
    }
    Ok(name)
}

/// A DNS name in ASCII (IDNs travel as punycode): letters, digits, `-`, `_`, `.`.
fn valid_host_name(value: &[u8]) -> Result<String, HelloError> {
    let allowed = |b: &u8| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.');
    if value.is_empty()
        || value.len() > MAX_HOST_NAME
        || !value.iter().all(allowed)
        || value.starts_with(b".")
        || value.windows(2).any(|pair| pair == b"..")
    {
        return Err(HelloError::BadServerName);
    }
    let mut name = String::with_capacity(value.len());
    name.extend(value.iter().map(|b| char::from(b.to_ascii_lowercase())));
    Ok(name)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::sync::Arc;

    use super::*;

    /// A real ClientHello, as rustls (TLS 1.3 and 1.2, ALPN) sends it for `name`, or
    /// without SNI when `name` is an IP address.
    fn rustls_hello(name: &str) -> Vec<u8> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(rustls::RootCertStore::empty())
            .with_no_client_auth();
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let server = rustls::pki_types::ServerName::try_from(name)
            .unwrap()
            .to_owned();
        let mut connection = rustls::ClientConnection::new(Arc::new(config), server).unwrap();
        let mut wire = Vec::new();
        while connection.wants_write() {
            connection.write_tls(&mut wire).unwrap();
        }
        wire
    }

    /// A ClientHello built by hand, with `extensions` as given.
    fn hello_with(extensions: &[u8]) -> Vec<u8> {
        let mut body = vec![3, 3];
        body.extend_from_slice(&[7; 32]);
        body.push(0); // session id
        body.extend_from_slice(&[0, 2, 0x13, 0x01]); // one cipher suite
        body.extend_from_slice(&[1, 0]); // null compression
        body.extend_from_slice(&u16::try_from(extensions.len()).unwrap().to_be_bytes());
        body.extend_from_slice(extensions);
        wrap(&body, MAX_RECORD_PAYLOAD)
    }

    /// The body as a ClientHello message in records of at most `record` bytes.
    fn wrap(body: &[u8], record: usize) -> Vec<u8> {
        let len = u32::try_from(body.len()).unwrap().to_be_bytes();
        let mut message = vec![CLIENT_HELLO, len[1], len[2], len[3]];
        message.extend_from_slice(body);
        let mut wire = Vec::new();
        for fragment in message.chunks(record) {
            wire.extend_from_slice(&[HANDSHAKE, 3, 1]);
            wire.extend_from_slice(&u16::try_from(fragment.len()).unwrap().to_be_bytes());
            wire.extend_from_slice(fragment);
        }
        wire
    }

    fn sni_extension(names: &[(u8, &[u8])]) -> Vec<u8> {
        let mut list = Vec::new();
        for (kind, name) in names {
            list.push(*kind);
            list.extend_from_slice(&u16::try_from(name.len()).unwrap().to_be_bytes());
            list.extend_from_slice(name);
        }
        let mut data = u16::try_from(list.len()).unwrap().to_be_bytes().to_vec();
        data.extend_from_slice(&list);
        let mut extension = vec![0, 0];
        extension.extend_from_slice(&u16::try_from(data.len()).unwrap().to_be_bytes());
        extension.extend_from_slice(&data);
        extension
    }

    fn name_of(wire: &[u8]) -> Result<Option<Option<String>>, HelloError> {
        parse(wire).map(|hello| hello.map(|h| h.server_name))
    }

    #[test]
    fn reads_the_name_rustls_sends() {
        let wire = rustls_hello("WWW.Example.com");
        let hello = parse(&wire).unwrap().unwrap();
        assert_eq!(hello.server_name.as_deref(), Some("www.example.com"));
        assert_eq!(hello.wire_len, wire.len());
        // Bytes after the ClientHello (early data, the next record) are left alone.
        let mut more = wire.clone();
        more.extend_from_slice(&[23, 3, 3, 0, 1, 0]);
        assert_eq!(parse(&more).unwrap().unwrap().wire_len, wire.len());
    }

    #[test]
    fn no_name_for_an_ip_address() {
        let wire = rustls_hello("192.0.2.7");
        assert_eq!(name_of(&wire), Ok(Some(None)));
        assert_eq!(name_of(&hello_with(&[])), Ok(Some(None)));
    }

    #[test]
    fn every_truncation_asks_for_more() {
        let wire = rustls_hello("www.example.com");
        for len in 0..wire.len() {
            assert_eq!(name_of(&wire[..len]), Ok(None), "truncated at {len}");
        }
    }

    #[test]
    fn a_hello_split_over_records_is_reassembled() {
        let wire = rustls_hello("split.example.org");
        // Take the message out of its record and put it into 50-byte records.
        let body = &wire[RECORD_HEADER + 4..];
        for record in [1, 3, 50, 400] {
            let split = wrap(body, record);
            assert_eq!(
                name_of(&split),
                Ok(Some(Some("split.example.org".to_owned()))),
                "records of {record}"
            );
            for len in 0..split.len() {
                assert_eq!(name_of(&split[..len]), Ok(None), "{record}: cut at {len}");
            }
        }
    }

    #[test]
    fn other_protocols_are_not_tls() {
        assert_eq!(name_of(b"GET / HTTP/1.1\r\n"), Err(HelloError::NotTls));
        assert_eq!(name_of(b"G"), Err(HelloError::NotTls));
        // An SSLv2-compatible hello.
        assert_eq!(name_of(&[0x80, 0x2e, 0x01, 0x03]), Err(HelloError::NotTls));
        assert_eq!(name_of(&[HANDSHAKE, 2]), Err(HelloError::NotTls));
        // An alert record instead of a handshake.
        assert_eq!(name_of(&[21, 3, 3, 0, 2, 2, 40]), Err(HelloError::NotTls));
        // A handshake record that holds a ServerHello.
        assert_eq!(
            name_of(&[HANDSHAKE, 3, 3, 0, 4, 2, 0, 0, 0]),
            Err(HelloError::NotClientHello)
        );
    }

    #[test]
    fn oversized_lengths_are_refused_before_buffering() {
        // A record longer than TLS allows.
        assert!(matches!(
            name_of(&[HANDSHAKE, 3, 1, 0x40, 0x01]),
            Err(HelloError::Malformed(_))
        ));
        assert!(matches!(
            name_of(&[HANDSHAKE, 3, 1, 0, 0]),
            Err(HelloError::Malformed(_))
        ));
        // A ClientHello that claims 16 MiB.
        assert_eq!(
            name_of(&[HANDSHAKE, 3, 1, 0, 4, CLIENT_HELLO, 0xff, 0xff, 0xff]),
            Err(HelloError::TooLarge)
        );
        // Just under the limit in one record is fine, just over is not.
        let fits = MAX_RECORD_PAYLOAD - 4;
        let mut head = vec![HANDSHAKE, 3, 1, 0x40, 0, CLIENT_HELLO];
        head.extend_from_slice(&u32::try_from(fits).unwrap().to_be_bytes()[1..]);
        assert_eq!(name_of(&head), Ok(None));
        let mut over = vec![HANDSHAKE, 3, 1, 0x40, 0, CLIENT_HELLO];
        over.extend_from_slice(&u32::try_from(fits + 1).unwrap().to_be_bytes()[1..]);
        assert_eq!(name_of(&over), Err(HelloError::TooLarge));
    }

    #[test]
    fn names_are_checked() {
        let ok = hello_with(&sni_extension(&[(0, b"Intranet.school.lan")]));
        assert_eq!(
            name_of(&ok),
            Ok(Some(Some("intranet.school.lan".to_owned())))
        );
        for bad in [
            &b""[..],
            b"a b.com",
            b"evil.com\0.good.com",
            b"..com",
            b".com",
            b"caf\xc3\xa9.fr",
            &[b'a'; 256],
        ] {
            let wire = hello_with(&sni_extension(&[(0, bad)]));
            assert_eq!(name_of(&wire), Err(HelloError::BadServerName), "{bad:?}");
        }
        let two = hello_with(&sni_extension(&[(0, b"a.com"), (0, b"b.com")]));
        assert!(matches!(name_of(&two), Err(HelloError::Malformed(_))));
        let mut twice = sni_extension(&[(0, b"a.com")]);
        twice.extend_from_slice(&sni_extension(&[(0, b"a.com")]));
        assert!(matches!(
            name_of(&hello_with(&twice)),
            Err(HelloError::Malformed(_))
        ));
        // Unknown name types are skipped.
        let other = hello_with(&sni_extension(&[(7, b"\x01\x02"), (0, b"x.org")]));
        assert_eq!(name_of(&other), Ok(Some(Some("x.org".to_owned()))));
    }

    #[test]
    fn encrypted_client_hello_is_noticed() {
        let plain = parse(&rustls_hello("www.example.com")).unwrap().unwrap();
        assert!(!plain.encrypted_client_hello);
        // An outer ClientHello: the public name, and an ECH extension (outer type 0,
        // then an opaque payload).
        let mut extensions = sni_extension(&[(0, b"public.example.net")]);
        extensions.extend_from_slice(&[0xfe, 0x0d, 0, 4, 0, 0, 1, 0x55]);
        let hello = parse(&hello_with(&extensions)).unwrap().unwrap();
        assert!(hello.encrypted_client_hello);
        assert_eq!(hello.server_name.as_deref(), Some("public.example.net"));
    }

    #[test]
    fn garbage_and_mutations_never_panic() {
        let mut state: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let real = rustls_hello("mutate.example.net");
        for round in 0..20_000 {
            let mut wire = real.clone();
            let flips = 1 + next() % 8;
            for _ in 0..flips {
                let at = usize::try_from(next() % wire.len() as u64).unwrap();
                wire[at] = next() as u8;
            }
            let cut = usize::try_from(next() % (wire.len() as u64 + 1)).unwrap();
            let result = parse(&wire[..cut]);
            if let Ok(Some(hello)) = result {
                assert!(hello.wire_len <= cut, "round {round}");
            }
            // Pure noise, starting like a handshake half of the time.
            let len = usize::try_from(next() % 600).unwrap();
            let mut noise: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            if round % 2 == 0 && noise.len() > 1 {
                noise[0] = HANDSHAKE;
                noise[1] = 3;
            }
            let _ = parse(&noise);
        }
    }
}
