//! The body type of every response the proxy sends to a client: either the origin's
//! streamed body or a page SafeGate generated. It carries the connection's in-flight
//! marker so the connection knows when it is idle again.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body_util::{Either, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};

use crate::client_io::InFlight;

/// A response body towards the client.
pub struct ResponseBody {
    inner: Either<Incoming, Full<Bytes>>,
    _in_flight: Option<InFlight>,
}

impl ResponseBody {
    /// The origin's body, streamed through.
    pub fn streamed(body: Incoming) -> Self {
        Self {
            inner: Either::Left(body),
            _in_flight: None,
        }
    }

    /// A body SafeGate generated.
    pub fn full(bytes: impl Into<Bytes>) -> Self {
        Self {
            inner: Either::Right(Full::new(bytes.into())),
            _in_flight: None,
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
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        match &mut self.inner {
            Either::Left(incoming) => Pin::new(incoming).poll_frame(cx),
            Either::Right(full) => Pin::new(full)
                .poll_frame(cx)
                .map_err(|never| match never {}),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
