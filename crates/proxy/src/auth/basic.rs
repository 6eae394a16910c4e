//! `Proxy-Authorization: Basic <token>` (RFC 7617 with RFC 7235): the token is
//! base64 of `user:password`. Parsing is split in two so that a cache hit never
//! decodes anything: [`token`] finds the token in the header (the credential cache is
//! keyed on it), [`decode`] turns it into a user name and a password on a miss.
//!
//! Everything here is client input: every malformation is a [`Malformed`] value, never
//! a panic.

use std::fmt;

use base64::Engine as _;
use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use http::HeaderValue;

/// Standard base64; padding optional (some clients leave it out).
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why a `Proxy-Authorization` header could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    /// The scheme is not `Basic` (e.g. `Negotiate`, `Bearer`) or there is no token.
    #[error("the scheme is not Basic, or there are no credentials after it")]
    NotBasic,
    /// The token is not base64.
    #[error("the credentials are not valid base64")]
    BadBase64,
    /// The decoded credentials are not UTF-8.
    #[error("the decoded credentials are not UTF-8")]
    NotUtf8,
    /// There is no `:` between the user name and the password.
    #[error("the decoded credentials have no ':' between user name and password")]
    NoColon,
}

/// A user name and password from the header. `Debug` leaves the password out.
pub(crate) struct Credentials {
    /// The user name as sent (not normalised).
    pub(crate) user: String,
    /// The password as sent.
    pub(crate) password: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("user", &self.user)
            .field("password", &"<hidden>")
            .finish()
    }
}

/// The base64 token of a `Basic` header: the scheme is matched without regard to
/// case, surrounding spaces are ignored.
pub(crate) fn token(value: &HeaderValue) -> Result<&[u8], Malformed> {
    let bytes = value.as_bytes().trim_ascii();
    let Some((scheme, rest)) = bytes.split_at_checked(5) else {
        return Err(Malformed::NotBasic);
    };
    if !scheme.eq_ignore_ascii_case(b"basic") || !rest.starts_with(b" ") {
        return Err(Malformed::NotBasic);
    }
    let token = rest.trim_ascii_start();
    if token.is_empty() {
        return Err(Malformed::NotBasic);
    }
    Ok(token)
}

/// The user name and password in a token: everything before the first `:` is the
/// user name (RFC 7617: a user name cannot contain one), the rest is the password.
pub(crate) fn decode(token: &[u8]) -> Result<Credentials, Malformed> {
    let decoded = BASE64.decode(token).map_err(|_| Malformed::BadBase64)?;
    let text = String::from_utf8(decoded).map_err(|_| Malformed::NotUtf8)?;
    let Some((user, password)) = text.split_once(':') else {
        return Err(Malformed::NoColon);
    };
    Ok(Credentials {
        user: user.to_owned(),
        password: password.to_owned(),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn header(text: &str) -> HeaderValue {
        HeaderValue::from_str(text).unwrap()
    }

    fn parse(text: &str) -> Result<Credentials, Malformed> {
        token(&header(text)).and_then(decode)
    }

    #[test]
    fn reads_basic_credentials() {
        // "Aladdin:open sesame", the RFC's example.
        let c = parse("Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==").unwrap();
        assert_eq!(
            (c.user.as_str(), c.password.as_str()),
            ("Aladdin", "open sesame")
        );
        // Any case of the scheme, extra spaces, no padding.
        let c = parse("  bAsIc    QWxhZGRpbjpvcGVuIHNlc2FtZQ  ").unwrap();
        assert_eq!(c.user, "Aladdin");
        // The password may hold colons; the user name is up to the first one.
        let c = parse(&format!("Basic {}", BASE64.encode("ada:pass:word"))).unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("ada", "pass:word"));
        // Empty parts are read (and refused later as an unknown user).
        let c = parse(&format!("Basic {}", BASE64.encode(":"))).unwrap();
        assert_eq!((c.user.as_str(), c.password.as_str()), ("", ""));
        let hidden = format!("{c:?}");
        assert!(hidden.contains("<hidden>"), "{hidden}");
    }

    #[test]
    fn malformed_headers_are_errors() {
        for (text, why) in [
            ("", Malformed::NotBasic),
            ("Basic", Malformed::NotBasic),
            ("Basic   ", Malformed::NotBasic),
            ("Basicx QWxh", Malformed::NotBasic),
            ("Bearer abc.def", Malformed::NotBasic),
            ("Negotiate YIIC", Malformed::NotBasic),
            ("Basic !!!!", Malformed::BadBase64),
            ("Basic QWxh ZGRp", Malformed::BadBase64),
            ("Basic QQ=A", Malformed::BadBase64),
        ] {
            assert_eq!(parse(text).err(), Some(why), "{text:?}");
        }
        let no_colon = format!("Basic {}", BASE64.encode("adapassword"));
        assert_eq!(parse(&no_colon).err(), Some(Malformed::NoColon));
        let latin1 = format!("Basic {}", BASE64.encode([b'a', 0xe9, b':', b'x']));
        assert_eq!(parse(&latin1).err(), Some(Malformed::NotUtf8));
        // Opaque (non-ASCII) header bytes are simply not base64.
        let opaque = HeaderValue::from_bytes(b"Basic \xff\xfe").unwrap();
        assert_eq!(
            token(&opaque).and_then(decode).err(),
            Some(Malformed::BadBase64)
        );
    }
}
