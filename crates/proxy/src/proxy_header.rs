//! The PROXY protocol (HAProxy's, versions 1 and 2) for connections from the load
//! balancers named in `proxy.proxy_protocol_from`: the header they put before the
//! client's bytes names the real client, whose address then identifies the person,
//! names the computer, counts towards the per-address limits and goes on the visit
//! record. Parsing is the `ppp` crate's; this module reads exactly the header's bytes
//! off the socket (nothing of the request after it), bounded in size
//! ([`MAX_V2_PAYLOAD`], 107 bytes for version 1) and, by the caller, in time.
//!
//! Only listed peers are read this way; a connection from anyone else is served as
//! it is, so a PROXY header from there is a malformed request (400). A listed peer
//! that sends no valid header is refused by the caller.

use std::net::SocketAddr;

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Largest version 2 payload (addresses and TLVs) accepted, in bytes: HAProxy's
/// `send-proxy-v2` sends 12 (IPv4) or 36 (IPv6) plus optional TLVs of a few dozen.
pub(crate) const MAX_V2_PAYLOAD: usize = 1024;

/// Longest version 1 header, CRLF included (the protocol's own limit).
const MAX_V1: usize = 107;

/// Bytes read before deciding the version: version 2's signature; shorter than the
/// shortest version 1 header ("PROXY UNKNOWN\r\n", 15 bytes), so nothing after a
/// header is ever read.
const SIGNATURE_LEN: usize = ppp::v2::PROTOCOL_PREFIX.len();

/// Why a listed peer's connection has no usable PROXY header.
#[derive(Debug, thiserror::Error)]
pub(crate) enum HeaderError {
    /// The connection failed or closed before a whole header arrived.
    #[error("connection ended before a whole PROXY header arrived: {0}")]
    Io(#[from] std::io::Error),
    /// The first bytes are not a PROXY header at all.
    #[error("no PROXY protocol header (the connection starts with something else)")]
    Missing,
    /// A header that `ppp` rejects, or that is longer than allowed.
    #[error("malformed PROXY header: {0}")]
    Malformed(String),
}

/// Reads one PROXY header off `stream` and returns the client it names; `None` for a
/// header that names nobody (version 2 LOCAL, version 1 UNKNOWN: the balancer's own
/// connection, such as a health check), which keeps the peer's address.
pub(crate) async fn read(stream: &mut TcpStream) -> Result<Option<SocketAddr>, HeaderError> {
    let mut head = [0u8; SIGNATURE_LEN];
    stream.read_exact(&mut head).await?;
    if head == ppp::v2::PROTOCOL_PREFIX {
        read_v2(stream, &head).await
    } else if head.starts_with(b"PROXY ") {
        read_v1(stream, &head).await
    } else {
        Err(HeaderError::Missing)
    }
}

/// The rest of a version 2 header: version, family, length, then that many bytes.
async fn read_v2(
    stream: &mut TcpStream,
    signature: &[u8],
) -> Result<Option<SocketAddr>, HeaderError> {
    let mut fixed = [0u8; 4];
    stream.read_exact(&mut fixed).await?;
    let payload = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
    if payload > MAX_V2_PAYLOAD {
        return Err(HeaderError::Malformed(format!(
            "version 2 payload of {payload} bytes (at most {MAX_V2_PAYLOAD})"
        )));
    }
    let mut header = Vec::with_capacity(signature.len() + fixed.len() + payload);
    header.extend_from_slice(signature);
    header.extend_from_slice(&fixed);
    header.resize(header.len() + payload, 0);
    let start = signature.len() + fixed.len();
    stream.read_exact(&mut header[start..]).await?;
    let parsed = ppp::v2::Header::try_from(header.as_slice())
        .map_err(|error| HeaderError::Malformed(error.to_string()))?;
    if parsed.command == ppp::v2::Command::Local {
        return Ok(None);
    }
    Ok(match parsed.addresses {
        ppp::v2::Addresses::IPv4(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        ppp::v2::Addresses::IPv6(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
    })
}

/// The rest of a version 1 header, a byte at a time up to its CRLF so that nothing
/// after it is consumed (at most 107 bytes; HAProxy sends it in one segment).
async fn read_v1(stream: &mut TcpStream, start: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    let mut header = Vec::with_capacity(MAX_V1);
    header.extend_from_slice(start);
    while !header.ends_with(b"\r\n") {
        if header.len() >= MAX_V1 {
            return Err(HeaderError::Malformed(format!(
                "version 1 header longer than {MAX_V1} bytes"
            )));
        }
        header.push(stream.read_u8().await?);
    }
    let parsed = ppp::v1::Header::try_from(header.as_slice())
        .map_err(|error| HeaderError::Malformed(error.to_string()))?;
    Ok(match parsed.addresses {
        ppp::v1::Addresses::Tcp4(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        ppp::v1::Addresses::Tcp6(ip) => Some(SocketAddr::from((ip.source_address, ip.source_port))),
        ppp::v1::Addresses::Unknown => None,
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::TcpListener;

    /// Sends `bytes` then "GET" over a real loopback connection; returns what `read`
    /// made of it and the bytes left on the socket after the header.
    async fn through_socket(bytes: Vec<u8>) -> (Result<Option<SocketAddr>, HeaderError>, Vec<u8>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let writer = tokio::spawn(async move {
            let mut client = TcpStream::connect(addr).await.unwrap();
            client.write_all(&bytes).await.unwrap();
            client.write_all(b"GET").await.unwrap();
            client.shutdown().await.unwrap();
        });
        let (mut accepted, _) = listener.accept().await.unwrap();
        let result = read(&mut accepted).await;
        let mut rest = Vec::new();
        let _ = accepted.read_to_end(&mut rest).await;
        writer.await.unwrap();
        (result, rest)
    }

    fn v2(command: u8, family: u8, payload: &[u8]) -> Vec<u8> {
        let mut bytes = ppp::v2::PROTOCOL_PREFIX.to_vec();
        bytes.extend([command, family]);
        bytes.extend(u16::try_from(payload.len()).unwrap().to_be_bytes());
        bytes.extend(payload);
        bytes
    }

    #[tokio::test]
    async fn version_2_names_the_client_and_leaves_the_request() {
        let payload = [10, 1, 2, 3, 127, 0, 0, 1, 0xC3, 0x50, 0x0C, 0x38];
        let (result, rest) = through_socket(v2(0x21, 0x11, &payload)).await;
        assert_eq!(result.unwrap(), Some("10.1.2.3:50000".parse().unwrap()));
        assert_eq!(rest, b"GET");
    }

    #[tokio::test]
    async fn version_2_local_names_nobody() {
        let (result, rest) = through_socket(v2(0x20, 0x00, &[])).await;
        assert_eq!(result.unwrap(), None);
        assert_eq!(rest, b"GET");
    }

    #[tokio::test]
    async fn version_1_names_the_client_and_leaves_the_request() {
        let header = b"PROXY TCP6 2001:db8::7 ::1 40000 3128\r\n".to_vec();
        let (result, rest) = through_socket(header).await;
        assert_eq!(
            result.unwrap(),
            Some("[2001:db8::7]:40000".parse().unwrap())
        );
        assert_eq!(rest, b"GET");
        let (result, rest) = through_socket(b"PROXY UNKNOWN\r\n".to_vec()).await;
        assert_eq!(result.unwrap(), None);
        assert_eq!(rest, b"GET");
    }

    #[tokio::test]
    async fn missing_oversized_and_malformed_headers_are_errors() {
        let (result, _) = through_socket(b"GET http://example.org/ HTTP/1.1\r\n".to_vec()).await;
        assert!(matches!(result, Err(HeaderError::Missing)), "{result:?}");
        let (result, _) = through_socket(v2(0x21, 0x11, &[0; MAX_V2_PAYLOAD + 1])).await;
        assert!(
            matches!(result, Err(HeaderError::Malformed(_))),
            "{result:?}"
        );
        let long = format!("PROXY TCP4 {}\r\n", "1".repeat(200));
        let (result, _) = through_socket(long.into_bytes()).await;
        assert!(
            matches!(result, Err(HeaderError::Malformed(_))),
            "{result:?}"
        );
        let (result, _) = through_socket(b"PROXY TCP4 10.0.0.300 1.2.3.4 1 2\r\n".to_vec()).await;
        assert!(
            matches!(result, Err(HeaderError::Malformed(_))),
            "{result:?}"
        );
        let (result, _) = through_socket(ppp::v2::PROTOCOL_PREFIX[..8].to_vec()).await;
        assert!(result.is_err(), "{result:?}");
    }
}
