//! Content analysis in the response path (plain HTTP and decrypted HTTPS): the
//! origin's body is scanned as it arrives ([`safegate_content::Scan`]) and held back
//! up to `content.max_hold`. A body that ends within that, or whose score is already
//! over the limit when the hold is full, is decided whole: over the limit it gets the
//! block page and nothing of it reaches the client. Otherwise the held bytes and the
//! rest stream on unchanged while the scan continues ([`ScannedBody`]); a limit
//! crossed after that is recorded on the visit (`late`) and alerted, not blocked.
//!
//! The bytes the client gets are the origin's own frames, never re-encoded. The scan
//! runs on the connection's task between polls: a few microseconds per 16 KiB frame,
//! no blocking, no lock. Held memory is bounded by `max_hold` plus one frame.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::header::{CONTENT_ENCODING, CONTENT_TYPE};
use http::{Method, Response};
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use safegate_content::{Coding, Finding, Scan};
use safegate_policy::ContentCheck;
use safegate_store::ContentScore;

/// How long a page is held at most while it arrives: a slow or streaming page (a
/// long poll, a live feed) is released after this and scanned as it streams on.
pub(crate) const HOLD_WAIT: Duration = Duration::from_secs(3);

/// A response chosen for scanning, with its scan started.
pub(crate) struct Scanning {
    check: ContentCheck,
    scan: Box<Scan>,
}

/// What the hold found.
pub(crate) enum Held {
    /// Over the limit before anything was sent: block with `decision`.
    Over {
        /// What the scan found.
        finding: Finding,
        /// The blocking decision (`content:ROLE`).
        decision: safegate_policy::Decision,
    },
    /// Under the limit (so far): send the held frames, then the rest.
    Release(Box<ScannedBody>),
}

/// Starts a scan when the response is a page the check covers (text/html,
/// text/plain, JSON, in a coding the scanner can undo).
pub(crate) fn start(
    check: Option<ContentCheck>,
    method: &Method,
    response: &Response<Incoming>,
) -> Option<Scanning> {
    let check = check?;
    if method == Method::HEAD {
        return None;
    }
    let header = |name| response.headers().get(name).and_then(|v| v.to_str().ok());
    let (markup, charset) = safegate_content::content_type(header(CONTENT_TYPE))?;
    let coding = Coding::from_header(header(CONTENT_ENCODING))?;
    let scan = Scan::new(
        std::sync::Arc::clone(&check.set),
        coding,
        markup,
        charset,
        check.limits,
    );
    Some(Scanning {
        check,
        scan: Box::new(scan),
    })
}

impl Scanning {
    /// Reads the body up to `max_hold` bytes (or its end, or `wait`), scanning it.
    pub(crate) async fn hold(mut self, mut body: Incoming, wait: Duration) -> Held {
        let mut held = VecDeque::new();
        let mut held_bytes = 0u64;
        let mut ended = false;
        let mut error = None;
        let deadline = tokio::time::Instant::now() + wait;
        while held_bytes < self.check.max_hold {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                // The origin is slow: stop holding, keep scanning as it streams.
                Err(_) => break,
                Ok(None) => {
                    ended = true;
                    break;
                }
                Ok(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        self.scan.feed(data);
                        held_bytes += data.len() as u64;
                    }
                    held.push_back(frame);
                }
                Ok(Some(Err(e))) => {
                    error = Some(e);
                    break;
                }
            }
        }
        if ended {
            self.scan.finish();
        }
        let finding = self.scan.finding(|c| self.check.counts(c));
        if self.check.over(&finding) {
            let decision = self.check.decision(&finding);
            return Held::Over { finding, decision };
        }
        Held::Release(Box::new(ScannedBody {
            held,
            error,
            rest: (!ended).then_some(body),
            scanning: self,
            ended,
        }))
    }

    /// The visit log's view of a finding.
    pub(crate) fn score(finding: &Finding, late: bool) -> Option<ContentScore> {
        (finding.score != 0 || !finding.phrases.is_empty()).then(|| ContentScore {
            score: finding.score,
            categories: finding.categories.clone(),
            phrases: finding.phrases.clone(),
            late,
        })
    }

    /// The check this scan runs under.
    pub(crate) fn check(&self) -> &ContentCheck {
        &self.check
    }
}

/// A released body: the held frames, then the rest of the origin's body, scanned as
/// it passes.
pub(crate) struct ScannedBody {
    held: VecDeque<Frame<Bytes>>,
    error: Option<hyper::Error>,
    rest: Option<Incoming>,
    scanning: Scanning,
    ended: bool,
}

impl ScannedBody {
    /// The finding once the body has ended (`None` before, or when the client left).
    pub(crate) fn final_score(&mut self) -> Option<ContentScore> {
        if !self.ended {
            return None;
        }
        let check = &self.scanning.check;
        let finding = self.scanning.scan.finding(|c| check.counts(c));
        let late = check.over(&finding);
        Scanning::score(&finding, late)
    }
}

impl Body for ScannedBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        if let Some(frame) = this.held.pop_front() {
            return Poll::Ready(Some(Ok(frame)));
        }
        if let Some(error) = this.error.take() {
            return Poll::Ready(Some(Err(error)));
        }
        let Some(rest) = &mut this.rest else {
            return Poll::Ready(None);
        };
        let polled = Pin::new(rest).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.scanning.scan.feed(data);
                }
            }
            Poll::Ready(None) => {
                this.scanning.scan.finish();
                this.ended = true;
                this.rest = None;
            }
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_empty() && self.error.is_none() && self.rest.is_none()
    }
}
