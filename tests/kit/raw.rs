//! Raw TCP helpers for bad-input tests, where a real HTTP client would refuse to send
//! what we need to send.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub async fn connect(addr: SocketAddr) -> TcpStream {
    TcpStream::connect(addr).await.unwrap()
}

/// Reads until the peer closes or `limit` passes; returns what arrived.
pub async fn read_until_close(stream: &mut TcpStream, limit: Duration) -> Vec<u8> {
    let mut received = Vec::new();
    let _ = tokio::time::timeout(limit, stream.read_to_end(&mut received)).await;
    received
}

/// Reads one response head (up to the blank line) and returns it as text.
pub async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = stream.read(&mut byte).await.unwrap();
        assert!(
            n > 0,
            "connection closed inside a response head: {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Reads a response with a Content-Length body; returns (head, body).
pub async fn read_response(stream: &mut TcpStream) -> (String, Vec<u8>) {
    let head = read_head(stream).await;
    let length = head
        .lines()
        .find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.eq_ignore_ascii_case("content-length")
                .then(|| value.trim().parse::<usize>().ok())?
        })
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    stream.read_exact(&mut body).await.unwrap();
    (head, body)
}

/// Sends `request` on a new connection and returns the first complete response (or
/// everything until close, whichever comes first).
pub async fn exchange(addr: SocketAddr, request: &[u8]) -> String {
    let mut stream = connect(addr).await;
    stream.write_all(request).await.unwrap();
    let mut received = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    let _ = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => received.extend_from_slice(&buf[..n]),
            }
            if response_complete(&received) {
                return;
            }
        }
    })
    .await;
    String::from_utf8_lossy(&received).into_owned()
}

fn response_complete(data: &[u8]) -> bool {
    let Some(end) = data.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
    let body = &data[end + 4..];
    if let Some(length) = head
        .lines()
        .find_map(|line| line.strip_prefix("content-length:"))
    {
        return length
            .trim()
            .parse::<usize>()
            .is_ok_and(|length| body.len() >= length);
    }
    if head.contains("transfer-encoding: chunked") {
        return body.ends_with(b"0\r\n\r\n");
    }
    true
}

/// The status code of a response text.
pub fn status_of(response: &str) -> u16 {
    response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {response:?}"))
}
