//! The request pipeline: the steps every way in takes a request through, in order.
//!
//! 1. **begin**: a [`Ledger`] opens for the request (its start time, the connection's
//!    in-flight mark);
//! 2. **identify** the client ([`identify`], [`identify_by_address`]): credentials,
//!    portal log-in, address binding or the policy's default role, or the `407`;
//! 3. **decide** where it goes ([`decide`]): the one call of `Snapshot::decide` in the
//!    proxy, timed, with the visit-log record started in the ledger; a blocked request
//!    is answered with [`block`] (the block page, or the short refusal of a CONNECT);
//! 4. **answer**: the way in forwards, tunnels, relays an upgrade, or serves a page;
//! 5. **finish** ([`finish`], [`finish_tunnel`]): counts the request, its decision and
//!    any upstream failure exactly once, completes the visit record exactly once (its
//!    status and failure; the body or the tunnel relay then submits it with bytes and
//!    duration), and writes the per-request debug line. A request whose client goes
//!    away before the answer is settled when its [`Ledger`] is dropped.
//!
//! The ways in (`service` for absolute-form HTTP and CONNECT, `forward`, `tunnel`,
//! `transparent`, `tls::intercept`) call these steps; this module calls none of them.
//! A tunnel's TLS server name is a second name for the same connection, decided here
//! too ([`NameCheck`]) and counted as a decision of its own when it differs from the
//! CONNECT host.

use crate::event_log::{BLOCKED, throttled};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use http::Response;
use http::header::{HeaderMap, PROXY_AUTHORIZATION};
use jiff::Timestamp;
use safegate_policy::{Decision, RequestTarget, Snapshot, SniMismatch, Verdict};
use safegate_store::SeenAs;
use tracing::debug;

use crate::auth::{Check, Identity, Refusal, TokenPurpose};
use crate::block_page::{self, BlockInfo, ReviewTarget};
use crate::body::ResponseBody;
use crate::client_io::InFlight;
use crate::intake::{ClientContext, Intake};
use crate::metrics::{DecisionSlot, ProxyMetrics};
use crate::sni::ClientHello;
use crate::state::ProxyState;
use crate::visit_record::{PendingRecord, RequestFacts};

/// A client identified for one request, with the policy it is decided against.
pub(crate) struct Identified {
    /// The policy for the whole request.
    pub(crate) snapshot: Arc<Snapshot>,
    /// Who the request is decided for.
    pub(crate) identity: Identity,
}

/// Who the client is: explicit-proxy clients by their credentials, portal log-in,
/// binding or the default role (or the `407` answer when they must log in);
/// transparent clients by their address. `page_request`: a `GET`/`HEAD` of an
/// `http://` page, which goes to the login portal rather than `407` when the portal
/// covers explicit clients.
pub(crate) async fn identify(
    state: &ProxyState,
    client: &ClientContext,
    headers: &HeaderMap,
    target: &str,
    page_request: bool,
) -> Result<Identified, Response<ResponseBody>> {
    if let Intake::Transparent { .. } = client.intake {
        return Ok(identify_by_address(state, client.peer.ip()));
    }
    let snapshot = state.policy.load_full();
    let identity = match authenticate(state, client, headers, &snapshot).await {
        Ok(identity) => identity,
        // With the portal on for explicit clients, a page request without
        // credentials goes to the login page rather than the browser's prompt.
        Err(Refusal::Missing) if page_request && state.auth.portal_redirects(false) => {
            Identity::unidentified(&snapshot, client.peer.ip())
        }
        Err(refusal) => return Err(state.auth.refusal_response(&refusal, target)),
    };
    Ok(Identified { snapshot, identity })
}

/// Who the client at `peer` is by its address alone: its portal log-in, its binding,
/// or the policy's default role. For clients that cannot be asked to log in.
pub(crate) fn identify_by_address(state: &ProxyState, peer: IpAddr) -> Identified {
    let snapshot = state.policy.load_full();
    let identity = state
        .auth
        .portal_session(peer)
        .or_else(|| state.auth.bound(peer))
        .unwrap_or_else(|| Identity::unidentified(&snapshot, peer));
    Identified { snapshot, identity }
}

/// An explicit-proxy client: credentials first (or a Kerberos log-in earlier on the
/// connection), then its portal log-in, then its binding, then (unless
/// `auth.required`) the default role.
async fn authenticate(
    state: &ProxyState,
    client: &ClientContext,
    headers: &HeaderMap,
    snapshot: &Snapshot,
) -> Result<Identity, Refusal> {
    let auth = &state.auth;
    let peer = client.peer.ip();
    match auth.check(peer, headers.get(PROXY_AUTHORIZATION)) {
        Check::Known(identity) => Ok(identity),
        Check::Refused(refusal) => Err(refusal),
        // Boxed: the rare slow path does not grow every request's future.
        Check::Verify(verification) => Box::pin(auth.verify(verification, &client.log_in)).await,
        Check::Anonymous => match auth
            .connection_identity(&client.log_in, peer)
            .or_else(|| auth.portal_session(peer))
            .or_else(|| auth.bound(peer))
        {
            Some(identity) => Ok(identity),
            None if auth.required() => Err(auth.challenge()),
            None => Ok(Identity::unidentified(snapshot, peer)),
        },
    }
}

/// One request's accounting from its start to its answer, settled exactly once by
/// [`finish`] or [`finish_tunnel`]; or, when the client goes away before the answer
/// (hyper drops the request's future), when it is dropped: the request and its
/// decision are counted all the same, and its record is submitted as it stands.
#[must_use = "a request is counted and recorded only when its ledger is finished"]
pub(crate) struct Ledger<'s> {
    stats: &'s ProxyMetrics,
    started: Instant,
    client: SocketAddr,
    in_flight: Option<InFlight>,
    /// Method and host for the per-request debug line, only when it is logged.
    line: Option<(String, String)>,
    /// The decision's counter and how long it took, once decided.
    decision: Option<(DecisionSlot, Duration)>,
    /// `allowed` or `blocked` for the debug line; `-` until decided.
    verdict: &'static str,
    record: Option<PendingRecord>,
    /// Set once settled: the request is counted once, however it ends.
    settled: bool,
}

impl Drop for Ledger<'_> {
    fn drop(&mut self) {
        if !self.settled {
            // The client went away before it was answered.
            let _record = self.settle(None, None);
        }
    }
}

impl<'s> Ledger<'s> {
    /// Opens the ledger of a request on `client`'s connection, marking the connection
    /// busy until the response body is done.
    pub(crate) fn begin(
        state: &'s ProxyState,
        client: &ClientContext,
        method: &str,
        host: Option<&str>,
    ) -> Self {
        let mut ledger = Self::begin_connection(state, client.peer, method, host);
        ledger.in_flight = Some(client.activity.request_started());
        ledger
    }

    /// Opens the ledger of a connection that is one request (transparent HTTPS).
    pub(crate) fn begin_connection(
        state: &'s ProxyState,
        client: SocketAddr,
        method: &str,
        host: Option<&str>,
    ) -> Self {
        let line = tracing::enabled!(tracing::Level::DEBUG)
            .then(|| (method.to_owned(), host.unwrap_or("-").to_owned()));
        Self {
            stats: &state.stats,
            started: Instant::now(),
            client,
            in_flight: None,
            line,
            decision: None,
            verdict: "-",
            record: None,
            settled: false,
        }
    }

    /// The counter of request body bytes passed to the origin, when recording.
    pub(crate) fn upload_counter(&self) -> Option<Arc<AtomicU64>> {
        self.record
            .as_ref()
            .map(|record| Arc::clone(&record.bytes_up))
    }

    /// The one place a request is counted: the request, its decision, an upstream
    /// failure, its latency; the record gets its status (none: the client went away
    /// before an answer, and the record keeps what it had) and failure; the debug line
    /// is written.
    fn settle(
        &mut self,
        status: Option<u16>,
        failure: Option<&'static str>,
    ) -> Option<PendingRecord> {
        debug_assert!(!self.settled, "a request's ledger was settled twice");
        self.settled = true;
        let stats = self.stats;
        stats.request_counted();
        if let Some((slot, took)) = self.decision.take() {
            stats.count_decision(slot, took);
        }
        if let Some(kind) = failure {
            stats.upstream_failed_kind(kind);
        }
        let elapsed = self.started.elapsed();
        stats.answered(elapsed);
        if let Some((method, host)) = &self.line {
            debug!(
                client = %self.client,
                method,
                host,
                decision = self.verdict,
                status = status.map_or_else(|| "client gone".to_owned(), |s| s.to_string()),
                elapsed_us = elapsed.as_micros() as u64,
                "request"
            );
        }
        let mut record = self.record.take();
        if let (Some(record), Some(status)) = (&mut record, status) {
            record.finish(status, failure);
        }
        record
    }

    /// A later decision blocked the request (a file rule or the content on the
    /// response): the record and the decision counter say so.
    pub(crate) fn blocked_later(&mut self, role: safegate_policy::Role, decision: &Decision) {
        self.verdict = "blocked";
        if let Some((slot, _)) = &mut self.decision {
            *slot = self.stats.decision_slot(role, decision);
        }
        if let Some(record) = &mut self.record {
            record.block(decision);
        }
    }

    /// What content analysis found on the response, for the visit record.
    pub(crate) fn content_found(&mut self, score: Option<safegate_store::ContentScore>) {
        if let (Some(record), Some(score)) = (&mut self.record, score) {
            record.content(score);
        }
    }
}

/// Where a request or tunnel goes, as decided and recorded.
pub(crate) struct Destination<'a> {
    /// The normalised host (and path, when visible).
    pub(crate) target: &'a RequestTarget,
    /// `http` or `https`.
    pub(crate) scheme: &'static str,
    /// Destination port.
    pub(crate) port: u16,
    /// How much of the request SafeGate sees.
    pub(crate) seen_as: SeenAs,
    /// The request's method as recorded (`CONNECT`, `TLS` for transparent HTTPS).
    pub(crate) method: &'a str,
    /// The client's `User-Agent`, when it sent one.
    pub(crate) user_agent: Option<&'a str>,
}

/// A request decided against the live policy.
pub(crate) struct Decided {
    /// The policy the request was decided with (kept for the response phase).
    pub(crate) snapshot: Arc<Snapshot>,
    /// Who the request was decided for.
    pub(crate) identity: Identity,
    /// The decision.
    pub(crate) decision: Decision,
    /// When it was decided.
    pub(crate) now: Timestamp,
}

/// Decides `destination` for the identified client, noting the decision in the ledger
/// (counted by `finish`) and starting the visit-log record there.
pub(crate) fn decide(
    state: &ProxyState,
    ledger: &mut Ledger<'_>,
    who: Identified,
    destination: Destination<'_>,
) -> Decided {
    let Identified { snapshot, identity } = who;
    let now = Timestamp::now();
    let (decision, counted) = decide_timed(state, &snapshot, &identity, destination.target, now);
    ledger.decision = Some(counted);
    ledger.verdict = if decision.is_blocked() {
        "blocked"
    } else {
        "allowed"
    };
    ledger.record = state.records.as_ref().map(|sink| {
        let facts = RequestFacts {
            client: ledger.client,
            user: identity.user.as_deref(),
            role: identity.role,
            group: identity.group.as_deref(),
            identified_by: identity.identified_by,
            method: destination.method,
            scheme: destination.scheme,
            target: destination.target,
            port: destination.port,
            decision: &decision,
            seen_as: destination.seen_as,
            user_agent: destination.user_agent,
        };
        PendingRecord::new(
            facts.record(state.record_clock, state.computer_names.as_ref()),
            Arc::clone(sink),
            ledger.started,
        )
    });
    Decided {
        snapshot,
        identity,
        decision,
        now,
    }
}

/// The proxy's one call of `Snapshot::decide`, and of its banned searches (a search
/// whose terms hold a banned phrase is blocked as the request's decision): the
/// decision, where it is counted and how long it took.
fn decide_timed(
    state: &ProxyState,
    snapshot: &Snapshot,
    identity: &Identity,
    target: &RequestTarget,
    now: Timestamp,
) -> (Decision, (DecisionSlot, Duration)) {
    let started = Instant::now();
    let subject = identity.subject();
    let mut decision = snapshot.decide(&subject, target, now);
    if !decision.is_blocked()
        && snapshot.banned_searches_apply(identity.role)
        && let Some(path) = target.path.as_deref()
        && let Some(search) = safegate_activity::extract(target.host.as_str(), path)
        && let Some((_, banned)) = snapshot.banned_search(&subject, &search.terms)
    {
        decision = banned;
    }
    let took = started.elapsed();
    let slot = state.stats.decision_slot(identity.role, &decision);
    (decision, (slot, took))
}

/// Whether new requests are refused because their visits cannot be recorded
/// (`store.when_full = "refuse-traffic"` while the disk is full): an atomic load.
pub(crate) fn refusing_unrecorded(state: &ProxyState) -> bool {
    state.records.as_ref().is_some_and(|sink| sink.refusing())
}

/// The `503` page for a request refused because its visit cannot be recorded, when
/// it is; `None` otherwise (the usual case, decided by one atomic load).
pub(crate) fn store_full_refusal(
    state: &ProxyState,
    target: &str,
) -> Option<Response<ResponseBody>> {
    if !refusing_unrecorded(state) {
        return None;
    }
    Some(crate::error_page::page(
        http::StatusCode::SERVICE_UNAVAILABLE,
        "store-full",
        target,
        "SafeGate cannot record visits because its disk is full; the technician has been \
         told. Please try again later.",
    ))
}

/// How a blocked request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockAnswer {
    /// The block page for a plain-HTTP request; its review form posts to the proxy.
    PlainHttp,
    /// The block page inside a decrypted tunnel; its review form posts to the page's
    /// own HTTPS origin, which `tls::intercept` answers.
    Decrypted,
    /// The short refusal of a CONNECT.
    Connect,
}

/// The answer to a blocked request (`decision`, which may be a later one than
/// `decided`'s, such as a file rule): the block page, or for CONNECT a short refusal.
pub(crate) fn block(
    state: &ProxyState,
    client: &ClientContext,
    decided: &Decided,
    decision: &Decision,
    target: &str,
    answer: BlockAnswer,
    headers: &http::HeaderMap,
) -> Response<ResponseBody> {
    let identity = &decided.identity;
    throttled!(
        BLOCKED,
        client = %client.peer,
        user = identity.user.as_deref(),
        role = identity.role.as_str(),
        target,
        rule = decision.rule,
        categories = ?decision.categories,
        "blocked"
    );
    let at = block_page::local_time(&decided.snapshot, decided.now);
    let review = match answer {
        BlockAnswer::Decrypted => ReviewTarget::SameOrigin,
        BlockAnswer::PlainHttp | BlockAnswer::Connect => ReviewTarget::Proxy(client.local),
    };
    let review_action = review.action();
    let review_token = state
        .auth
        .form_token(TokenPurpose::Review, client.peer.ip());
    let info = BlockInfo::of(
        decision,
        identity,
        target,
        &at,
        Some(&review_action),
        Some(&review_token),
    )
    .at_school(&decided.snapshot)
    .asked_by(headers)
    .with_review(review_outcome(state, identity, client.peer.ip(), target));
    if answer == BlockAnswer::Connect {
        block_page::connect_refusal(&info)
    } else {
        block_page::page(&info)
    }
}

/// What became of this person's review request for `target`, for the block page (a
/// few reads of the database, on block pages only).
fn review_outcome(
    state: &ProxyState,
    identity: &Identity,
    peer: IpAddr,
    target: &str,
) -> Option<block_page::ReviewOutcome> {
    let decision = state
        .reviews
        .as_ref()?
        .outcome(identity.user.as_deref(), peer, target)?;
    Some(match decision {
        None => block_page::ReviewOutcome::Waiting,
        Some(decision) if decision.approved => block_page::ReviewOutcome::Approved,
        Some(decision) => block_page::ReviewOutcome::Declined(decision.reason),
    })
}

/// The block page's review form posted by `client`, identified as `identity`: stored
/// (or refused) by [`crate::local_pages::review`], whichever way the page was shown
/// (plain HTTP, inside a decrypted tunnel, or over a blocked TLS connection).
pub(crate) async fn answer_review(
    state: &ProxyState,
    client: IpAddr,
    identity: &Identity,
    request: http::Request<hyper::body::Incoming>,
) -> Response<ResponseBody> {
    let requester = crate::local_pages::Requester {
        client,
        user: identity.user.clone(),
        role: identity.role.as_str().to_owned(),
        school_language: state.policy.load().block_page().language.clone(),
    };
    crate::local_pages::review(
        state.reviews.as_ref(),
        &state.auth,
        &state.review_limits,
        requester,
        request,
        state.body_read_timeout,
    )
    .await
}

/// Settles a request answered with `response`: counts it, its decision and `failure`
/// (an upstream failure kind), completes its record, which rides on the body and is
/// submitted when the client has it all (or has gone).
pub(crate) fn finish(
    mut ledger: Ledger<'_>,
    response: Response<ResponseBody>,
    failure: Option<&'static str>,
) -> Response<ResponseBody> {
    let record = ledger.settle(Some(response.status().as_u16()), failure);
    let in_flight = ledger.in_flight.take();
    response.map(|body| {
        let body = body.recording(record);
        match in_flight {
            Some(in_flight) => body.finishing(in_flight),
            None => body,
        }
    })
}

/// Settles a request whose answer is a tunnel or relay (CONNECT, an upgrade,
/// transparent HTTPS) with `status`: as [`finish`], but the record is handed back to
/// follow the relay, which submits it (by dropping it) when the relay ends. The
/// connection's in-flight mark goes onto `response`, when there is one.
pub(crate) fn finish_tunnel(
    mut ledger: Ledger<'_>,
    response: Option<&mut Response<ResponseBody>>,
    status: u16,
    failure: Option<&'static str>,
) -> Option<PendingRecord> {
    let record = ledger.settle(Some(status), failure);
    if let (Some(response), Some(in_flight)) = (response, ledger.in_flight.take()) {
        let body = std::mem::replace(response.body_mut(), ResponseBody::empty());
        *response.body_mut() = body.finishing(in_flight);
    }
    record
}

/// What the server name of a tunnel's ClientHello is checked against: the CONNECT
/// host's decision, for the same person with the same policy.
pub(crate) struct NameCheck {
    pub(crate) snapshot: Arc<Snapshot>,
    pub(crate) identity: Identity,
    /// The CONNECT host.
    pub(crate) connect: RequestTarget,
    pub(crate) now: Timestamp,
    pub(crate) peer: SocketAddr,
}

impl NameCheck {
    /// The check for a tunnel decided as `decided`, to `connect`, from `peer`.
    pub(crate) fn of(decided: Decided, connect: RequestTarget, peer: SocketAddr) -> Self {
        Self {
            snapshot: decided.snapshot,
            identity: decided.identity,
            connect,
            now: decided.now,
            peer,
        }
    }

    /// `None` when the ClientHello may go on; otherwise the decision that refuses it.
    /// A server name other than the CONNECT host is decided on its own (and counted).
    pub(crate) fn refusal(&self, state: &ProxyState, hello: &ClientHello) -> Option<Decision> {
        let name = hello.server_name.as_deref()?;
        let Ok(named) = RequestTarget::from_parts(name, None) else {
            return Some(refusal(
                "tls-unreadable",
                format!("the TLS server name `{name}` is not a valid host name"),
            ));
        };
        if named.host == self.connect.host {
            return None;
        }
        if !hello.encrypted_client_hello
            && !self.connect.host.is_ip()
            && self.snapshot.sni_mismatch() == SniMismatch::Block
        {
            return Some(refusal(
                "sni-mismatch",
                format!(
                    "the TLS server name `{name}` differs from the tunnel's host `{}` (domain fronting)",
                    self.connect.host.as_str()
                ),
            ));
        }
        let (decision, (slot, took)) =
            decide_timed(state, &self.snapshot, &self.identity, &named, self.now);
        state.stats.count_decision(slot, took);
        decision.is_blocked().then_some(decision)
    }

    /// Logs a refusal of the tunnel's ClientHello and sends the client the alert.
    pub(crate) async fn refuse<C: tokio::io::AsyncWrite + Unpin>(
        &self,
        client: &mut C,
        decision: &Decision,
        server_name: Option<&str>,
    ) {
        throttled!(
            BLOCKED,
            client = %self.peer,
            role = self.identity.role.as_str(),
            user = self.identity.user.as_deref(),
            host = self.connect.host.as_str(),
            server_name,
            rule = decision.rule,
            reason = decision.reason,
            "blocked (TLS server name: access_denied alert)"
        );
        crate::hello::send_access_denied(client).await;
    }
}

/// A decision refusing a tunnel for a reason of its own (not a policy rule).
pub(crate) fn refusal(rule: &str, reason: String) -> Decision {
    Decision {
        verdict: Verdict::Block,
        categories: Vec::new(),
        rule: rule.to_owned(),
        reason,
    }
}
