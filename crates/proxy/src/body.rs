//! The body type of every response the proxy sends to a client: either the origin's
//! streamed body or a page SafeGate generated. It carries the connection's in-flight
//! marker so the connection knows when it is idle again.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::client_io::InFlight;
use crate::content_gate::ScannedBody;
use crate::visit_record::PendingRecord;

/// Where a response body's bytes come from.
enum Inner {
    /// The origin's body, streamed through.
    Streamed(Incoming),
    /// A page SafeGate generated.
    Full(Full<Bytes>),
    /// The origin's body under content analysis ([`crate::content_gate`]).
    Scanned(Box<ScannedBody>),
}

/// A response body towards the client.
pub struct ResponseBody {
    inner: Inner,
    _in_flight: Option<InFlight>,
    record: Option<PendingRecord>,
}

/// A request body on its way to the origin, counted for the visit log.
pub struct UpstreamBody {
    inner: Incoming,
    sent: Option<Arc<AtomicU64>>,
}

impl UpstreamBody {
    /// Wraps the client's body; `sent` (if any) counts the bytes passed on.
    pub(crate) fn new(inner: Incoming, sent: Option<Arc<AtomicU64>>) -> Self {
        Self { inner, sent }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        if let (Poll::Ready(Some(Ok(frame))), Some(sent)) = (&polled, &self.sent)
            && let Some(data) = frame.data_ref()
        {
            sent.fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl ResponseBody {
    /// The origin's body, streamed through.
    pub fn streamed(body: Incoming) -> Self {
        Self {
            inner: Inner::Streamed(body),
            _in_flight: None,
            record: None,
        }
    }

    /// A body SafeGate generated.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            inner: Inner::Full(Full::new(bytes.into())),
            _in_flight: None,
            record: None,
        }
    }

    /// The origin's body under content analysis.
    pub(crate) fn scanned(body: Box<ScannedBody>) -> Self {
        Self {
            inner: Inner::Scanned(body),
            _in_flight: None,
            record: None,
        }
    }

    /// No body.
    pub fn empty() -> Self {
        Self::full(Bytes::new())
    }

    pub(crate) fn finishing(mut self, in_flight: InFlight) -> Self {
        self._in_flight = Some(in_flight);
        self
    }

    /// Attaches the visit-log record that is submitted when this body is done.
    pub(crate) fn recording(mut self, record: Option<PendingRecord>) -> Self {
        self.record = record;
        self
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = &mut *self;
        let polled = match &mut this.inner {
            Inner::Streamed(incoming) => Pin::new(incoming).poll_frame(cx),
            Inner::Full(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
            Inner::Scanned(scanned) => {
                let polled = Pin::new(&mut **scanned).poll_frame(cx);
                if let (Poll::Ready(None), Some(record)) = (&polled, &mut this.record)
                    && let Some(score) = scanned.final_score()
                {
                    record.content(score);
                }
                polled
            }
        };
        if let (Poll::Ready(Some(Ok(frame))), Some(record)) = (&polled, &mut this.record)
            && let Some(data) = frame.data_ref()
        {
            record.add_down(data.len() as u64);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            Inner::Streamed(body) => body.is_end_stream(),
            Inner::Full(body) => body.is_end_stream(),
            // The scan's end is seen by polling to the end, never skipped.
            Inner::Scanned(_) => false,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            Inner::Streamed(body) => body.size_hint(),
            Inner::Full(body) => body.size_hint(),
            Inner::Scanned(body) => body.size_hint(),
        }
    }
}
