//! Reading the body of a request SafeGate answers itself (the block page's review
//! form, the portal log-in): at most a given size, and within
//! `proxy.body_read_timeout`, so a client that announces a body and never sends it
//! cannot hold its connection (and its place under `proxy.max_connections`) forever.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::header::{CONNECTION, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tracing::info;

use crate::body::ResponseBody;
use crate::error_page;

/// Why a form's body was not read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FormBodyError {
    /// Larger than the limit, or the client closed before the end.
    TooLargeOrIncomplete,
    /// Not all there within `proxy.body_read_timeout`.
    TimedOut,
}

/// The whole body, at most `limit` bytes, within `timeout`.
pub(crate) async fn read(
    body: Incoming,
    limit: usize,
    timeout: Duration,
) -> Result<Bytes, FormBodyError> {
    let limited = http_body_util::Limited::new(body, limit);
    match tokio::time::timeout(timeout, limited.collect()).await {
        Ok(Ok(collected)) => Ok(collected.to_bytes()),
        Ok(Err(_)) => Err(FormBodyError::TooLargeOrIncomplete),
        Err(_) => Err(FormBodyError::TimedOut),
    }
}

/// Second (since the epoch) of the last "body timed out" line: one line a second at
/// most, however many clients do it.
static LAST_TIMEOUT_LINE: AtomicU64 = AtomicU64::new(u64::MAX);

/// The 408 for a body that did not arrive in time; the connection closes after it.
/// Logs at info, at most once a second.
pub(crate) fn timed_out(client: std::net::IpAddr, path: &str) -> Response<ResponseBody> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    if LAST_TIMEOUT_LINE.swap(now, Ordering::Relaxed) != now {
        info!(
            client = %client,
            path,
            "request body not received within proxy.body_read_timeout; answered 408 and closed (at most one such line a second)"
        );
    }
    let mut response = error_page::page(
        StatusCode::REQUEST_TIMEOUT,
        "body-timeout",
        path,
        "The form did not arrive in time. Send it again.",
    );
    response
        .headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    response
}
