//! One request from a client: decide where it goes (SafeGate's own pages, a CONNECT
//! tunnel, or an origin) and answer it. Requests for tunnels and origins are first
//! identified (credentials, portal log-in, address binding, default role:
//! [`crate::auth`]); a client that must log in gets `407`, or, where `auth.portal`
//! covers it, a page request (`GET`/`HEAD` of an `http://` URL) from a client nobody
//! identified is redirected to the login page ([`crate::portal_pages`], served here
//! without authentication like SafeGate's other own pages). Forwarding streams both bodies, strips hop-by-hop
//! headers (`Proxy-Authorization` among them), adds `Via`, and relays WebSocket
//! upgrades.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Instant;

use http::header::{
    CONTENT_DISPOSITION, CONTENT_TYPE, HOST, HeaderMap, HeaderValue, PROXY_AUTHORIZATION,
    USER_AGENT,
};
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use jiff::Timestamp;
use safegate_policy::{Decision, RequestTarget, Snapshot};
use tracing::{debug, info, warn};

use crate::auth::{Authenticator, Refusal, TokenPurpose};
use crate::block_page::{self, ReviewTarget};
use crate::body::{ResponseBody, UpstreamBody};
use crate::client_io::Activity;
use crate::error::UpstreamError;
use crate::error_page;
use crate::filter::{self, Identity};
use crate::hop_by_hop::{append_via, strip_hop_by_hop, wants_upgrade};
use crate::local_pages;
use crate::portal_pages;
use crate::safesearch::{self, Restrictions};
use crate::state::ProxyState;
use crate::transparent::Intake;
use crate::tunnel;
use crate::visit_record::{PendingRecord, RequestFacts, TunnelBytes};
use safegate_store::SeenAs;

/// Per client connection facts the handler needs.
pub(crate) struct ClientContext {
    pub(crate) peer: SocketAddr,
    /// The address the client connected to (differs from `listen` when that is a
    /// wildcard); SafeGate's own pages are reached through it.
    pub(crate) local: SocketAddr,
    pub(crate) activity: Arc<Activity>,
    /// Explicit proxy client, or redirected (transparent: never ask it for proxy
    /// credentials, it cannot answer them).
    pub(crate) intake: crate::transparent::Intake,
}

/// Entry point for every request hyper parsed on a client connection.
pub(crate) async fn handle(
    state: Arc<ProxyState>,
    client: Arc<ClientContext>,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    let in_flight = client.activity.request_started();
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let method = request.method().clone();
    let target = crate::metrics::target_without_userinfo(request.uri());
    let host = tracing::enabled!(tracing::Level::DEBUG)
        .then(|| request.uri().host().unwrap_or("-").to_owned());
    let response = if method == Method::CONNECT {
        match identify(&state, &client, request.headers(), &target, false).await {
            Ok(who) => tunnel::open(&state, &client, request, who).await,
            Err(refusal) => refusal,
        }
    } else if addressed_to_us(request.uri().authority(), &client, state.listen) {
        own_page(&state, &client, request).await
    } else {
        let page_request = matches!(*request.method(), Method::GET | Method::HEAD)
            && request.uri().scheme() == Some(&Scheme::HTTP);
        match identify(&state, &client, request.headers(), &target, page_request).await {
            Ok(who) if must_log_in(&state, &client, &request, &who.identity) => {
                portal_pages::redirect_to_login(client.local, &target)
            }
            Ok(who) => forward(&state, &client, request, who, SeenAs::PlainHttp).await,
            Err(refusal) => refusal,
        }
    };
    state.stats.answered(started.elapsed());
    debug!(
        client = %client.peer,
        %method,
        host,
        decision = crate::metrics::RequestOutcome::of(&response),
        status = response.status().as_u16(),
        elapsed_us = started.elapsed().as_micros() as u64,
        "request"
    );
    response.map(|body| body.finishing(in_flight))
}

/// Whether an unidentified client's page request goes to the login portal instead:
/// a `GET` or `HEAD` of an `http://` page by a client nobody identified (no credentials,
/// portal log-in or binding), where `auth.portal` covers its listener and there are
/// users to log in as.
fn must_log_in(
    state: &ProxyState,
    client: &ClientContext,
    request: &Request<Incoming>,
    identity: &Identity,
) -> bool {
    identity.identified_by == safegate_store::IdentifiedBy::Default
        && matches!(*request.method(), Method::GET | Method::HEAD)
        && request.uri().scheme() == Some(&Scheme::HTTP)
        && state
            .filter
            .auth()
            .portal_redirects(matches!(client.intake, Intake::Transparent { .. }))
}

/// A client identified for one request, with the policy it is decided against.
pub(crate) struct Identified {
    /// The policy for the whole request.
    pub(crate) snapshot: Arc<Snapshot>,
    /// Who the request is decided for.
    pub(crate) identity: Identity,
}

/// Who the client is: explicit-proxy clients by their credentials, binding or the
/// default role (or the `407` answer when they must log in); transparent clients by
/// their binding or the default role. `page_request`: a `GET`/`HEAD` of an `http://`
/// page, which goes to the login portal rather than `407` when the portal covers
/// explicit clients.
async fn identify(
    state: &ProxyState,
    client: &ClientContext,
    headers: &HeaderMap,
    target: &str,
    page_request: bool,
) -> Result<Identified, Response<ResponseBody>> {
    let snapshot = state.filter.snapshot();
    let identity = match client.intake {
        Intake::Transparent { .. } => state.filter.identify(client.peer.ip(), &snapshot),
        Intake::Explicit => match state
            .filter
            .authenticate(
                client.peer.ip(),
                headers.get(PROXY_AUTHORIZATION),
                &snapshot,
            )
            .await
        {
            Ok(identity) => identity,
            // With the portal on for explicit clients, a page request without
            // credentials goes to the login page rather than the browser's prompt.
            Err(Refusal::Missing)
                if page_request && state.filter.auth().portal_redirects(false) =>
            {
                filter::unidentified(&snapshot)
            }
            Err(refusal) => return Err(refusal.response(target)),
        },
    };
    Ok(Identified { snapshot, identity })
}

/// True for origin-form requests and for absolute-form requests naming the address
/// the client connected to (a browser using the proxy fetches SafeGate's own pages,
/// such as the review form target, that way).
fn addressed_to_us(
    authority: Option<&Authority>,
    client: &ClientContext,
    listen: SocketAddr,
) -> bool {
    let Some(authority) = authority else {
        return true;
    };
    let port = authority.port_u16().unwrap_or(80);
    let host = authority
        .host()
        .trim_start_matches('[')
        .trim_end_matches(']');
    let Ok(ip) = host.parse::<std::net::IpAddr>() else {
        return false;
    };
    [client.local, listen]
        .iter()
        .any(|own| own.port() == port && own.ip() == ip)
}

async fn own_page(
    state: &Arc<ProxyState>,
    client: &ClientContext,
    request: Request<Incoming>,
) -> Response<ResponseBody> {
    if matches!(
        request.uri().path(),
        portal_pages::LOGIN_PATH | portal_pages::LOGOUT_PATH
    ) {
        let portal_client = portal_pages::PortalClient {
            peer: client.peer.ip(),
            local: client.local,
            listen: state.listen,
        };
        return portal_pages::serve(state.filter.auth(), portal_client, request).await;
    }
    if request.method() == Method::POST && request.uri().path() == local_pages::REVIEW_PATH {
        // Credentials are not required for SafeGate's own pages; when they are sent
        // and right, the review request names the user.
        let identity = match identify(state, client, request.headers(), "", false).await {
            Ok(who) => who.identity,
            Err(_) => {
                let snapshot = state.filter.snapshot();
                state.filter.identify(client.peer.ip(), &snapshot)
            }
        };
        let requester = local_pages::Requester {
            client: client.peer.ip(),
            user: identity.user,
            role: identity.role.as_str().to_owned(),
        };
        return local_pages::review(
            state.reviews.as_ref(),
            state.filter.auth(),
            requester,
            request,
        )
        .await;
    }
    let host = request
        .headers()
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    local_pages::serve(
        request.method(),
        request.uri().path(),
        host.as_deref(),
        &state.pac,
        state.listen,
        state.status_figures(),
    )
}

/// A request inside a decrypted tunnel (`crate::tls::intercept`), already rewritten
/// to `https://host/path`, for the person identified at CONNECT: the same path as a
/// plain-HTTP request, over TLS to the origin.
///
/// Except the block page's review form: a decrypted block page posts it to its own
/// origin ([`ReviewTarget::SameOrigin`]), so a `POST` to
/// [`local_pages::REVIEW_PATH`] on any decrypted host is answered here, for the person
/// identified at CONNECT, and never reaches the origin (`/safegate/` is SafeGate's
/// namespace). Other methods on that path go to the origin as usual.
pub(crate) async fn handle_decrypted(
    state: Arc<ProxyState>,
    client: Arc<ClientContext>,
    request: Request<Incoming>,
    identity: Identity,
) -> Response<ResponseBody> {
    let in_flight = client.activity.request_started();
    state.stats.requests.fetch_add(1, Ordering::Relaxed);
    let started = Instant::now();
    let response =
        if request.method() == Method::POST && request.uri().path() == local_pages::REVIEW_PATH {
            let requester = local_pages::Requester {
                client: client.peer.ip(),
                user: identity.user,
                role: identity.role.as_str().to_owned(),
            };
            local_pages::review(
                state.reviews.as_ref(),
                state.filter.auth(),
                requester,
                request,
            )
            .await
        } else {
            let who = Identified {
                snapshot: state.filter.snapshot(),
                identity,
            };
            forward(&state, &client, request, who, SeenAs::Decrypted).await
        };
    state.stats.answered(started.elapsed());
    response.map(|body| body.finishing(in_flight))
}

/// Forwards a plain-HTTP request (`seen_as` `PlainHttp`) or a decrypted HTTPS one
/// (`Decrypted`).
async fn forward(
    state: &Arc<ProxyState>,
    client: &ClientContext,
    mut request: Request<Incoming>,
    who: Identified,
    seen_as: SeenAs,
) -> Response<ResponseBody> {
    let target = crate::metrics::target_without_userinfo(request.uri());
    let decrypted = seen_as == SeenAs::Decrypted;
    let (scheme, default_port, answer) = if decrypted {
        (Scheme::HTTPS, 443, BlockAnswer::Decrypted)
    } else {
        (Scheme::HTTP, 80, BlockAnswer::PlainHttp)
    };
    if request.uri().scheme() != Some(&scheme) {
        return error_page::page(
            StatusCode::BAD_REQUEST,
            "unsupported-scheme",
            &target,
            "SafeGate forwards http:// addresses; browsers reach https:// sites with CONNECT.",
        );
    }
    let Some(authority) = request.uri().authority().cloned() else {
        return error_page::page(
            StatusCode::BAD_REQUEST,
            "bad-request",
            &target,
            "The address has no host.",
        );
    };
    let host = authority.host().to_owned();
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    let Ok(normalized) = RequestTarget::from_parts(&host, Some(path_and_query)) else {
        return error_page::page(
            StatusCode::BAD_REQUEST,
            "bad-host",
            &target,
            "The address's host name is not valid.",
        );
    };
    let Decided {
        snapshot,
        identity,
        decision,
        now,
        mut pending,
    } = decide(
        state,
        client,
        &request,
        who,
        Destination {
            target: &normalized,
            scheme: if decrypted { "https" } else { "http" },
            port: authority.port_u16().unwrap_or(default_port),
            seen_as,
        },
    );
    if decision.is_blocked() {
        let page = blocked(
            state.filter.auth(),
            &snapshot,
            &identity,
            client,
            Blocked {
                decision: &decision,
                target: &target,
                now,
                answer,
            },
        );
        return with_record(page, pending, None);
    }
    let restrictions = filter::restrictions(&snapshot, &identity);

    let upgrade = wants_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));

    let headers = request.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    headers.insert(HOST, host_header(&authority));
    append_via(headers, &state.via);
    // A `user:password@` in the address goes no further (not into the connection
    // pool's key, nor its log lines).
    crate::metrics::strip_userinfo(request.uri_mut());
    if let Err(response) = enforce_safesearch(
        &mut request,
        &authority,
        normalized.host.as_str(),
        restrictions,
        &target,
    ) {
        return with_record(*response, pending, None);
    }

    let counter = pending.as_ref().map(|p| Arc::clone(&p.bytes_up));
    let request = request.map(|body| UpstreamBody::new(body, counter));
    let sent = tokio::time::timeout(state.response_timeout, async {
        match &state.decryption {
            Some(decryption) if decrypted => {
                // The origin's HTTP version is its own (ALPN); the client's is not.
                let mut request = request;
                *request.version_mut() = http::Version::HTTP_11;
                decryption.client.request(request).await
            }
            _ => state.client.request(request).await,
        }
    })
    .await;
    let mut response = match sent {
        Ok(Ok(response)) => response,
        Ok(Err(error)) => {
            // A certificate that fails verification gets a page saying so.
            if let Some(page) = decrypted
                .then(|| crate::tls::certificate_refusal(&error, &host, &target))
                .flatten()
            {
                state.stats.upstream_failed_kind("upstream-certificate");
                return with_record(page, pending, Some("upstream-certificate"));
            }
            let error = upstream_error(&error, &host);
            state.stats.upstream_failed(&error);
            debug!(%error, target, "upstream failed");
            let page = error_page::upstream_failure(&error, &target);
            return with_record(page, pending, Some(error.kind()));
        }
        Err(_) => {
            let error = UpstreamError::ResponseTimeout {
                host,
                seconds: state.response_timeout.as_secs(),
            };
            state.stats.upstream_failed(&error);
            let page = error_page::upstream_failure(&error, &target);
            return with_record(page, pending, Some(error.kind()));
        }
    };

    let switching = response.status() == StatusCode::SWITCHING_PROTOCOLS;
    if switching {
        match client_upgrade {
            Some(client_upgrade) => {
                let origin_upgrade = hyper::upgrade::on(&mut response);
                // The upgraded connection's record counts the relayed bytes and is
                // submitted when the relay ends.
                let relayed = pending.take().map(|mut pending| {
                    pending.finish(StatusCode::SWITCHING_PROTOCOLS.as_u16(), None);
                    pending
                });
                relay_upgraded(
                    state,
                    client_upgrade,
                    origin_upgrade,
                    target.clone(),
                    relayed,
                );
            }
            None => {
                let page = error_page::page(
                    StatusCode::BAD_GATEWAY,
                    "upstream-protocol",
                    &target,
                    "The site switched protocols without being asked to.",
                );
                state.stats.upstream_failed_kind("upstream-protocol");
                return with_record(page, pending, Some("upstream-protocol"));
            }
        }
    }
    if !switching {
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        let file_decision = snapshot.decide_response(
            &identity.subject(),
            &normalized,
            header(CONTENT_TYPE),
            header(CONTENT_DISPOSITION),
            now,
        );
        if let Some(decision) = file_decision.filter(|d| d.is_blocked()) {
            // Dropping the origin's response closes that connection; nothing was sent.
            let page = blocked(
                state.filter.auth(),
                &snapshot,
                &identity,
                client,
                Blocked {
                    decision: &decision,
                    target: &target,
                    now,
                    answer,
                },
            );
            let pending = pending.map(|mut p| {
                p.block(&decision);
                p
            });
            return with_record(page, pending, None);
        }
    }
    let headers = response.headers_mut();
    strip_hop_by_hop(headers, switching);
    append_via(headers, &state.via);
    with_record(response.map(ResponseBody::streamed), pending, None)
}

/// Attaches the visit-log record to the response: it is submitted, with the status,
/// bytes and duration, when the client has the whole body (or has gone).
pub(crate) fn with_record(
    response: Response<ResponseBody>,
    pending: Option<PendingRecord>,
    failure: Option<&str>,
) -> Response<ResponseBody> {
    let response = crate::metrics::RequestOutcome::allowed(response);
    let Some(mut pending) = pending else {
        return response;
    };
    pending.finish(response.status().as_u16(), failure);
    response.map(|body| body.recording(Some(pending)))
}

/// A request decided against the live policy, with its visit-log record started.
pub(crate) struct Decided {
    /// The policy the request was decided with (kept for the response phase).
    pub(crate) snapshot: Arc<Snapshot>,
    /// Who the request was decided for.
    pub(crate) identity: Identity,
    /// The decision.
    pub(crate) decision: Decision,
    /// When it was decided.
    pub(crate) now: Timestamp,
    /// The visit-log record, when the visit log is on.
    pub(crate) pending: Option<PendingRecord>,
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
}

/// Decides `destination` (a forwarded request or a tunnel) for the identified client.
pub(crate) fn decide(
    state: &ProxyState,
    client: &ClientContext,
    request: &Request<Incoming>,
    who: Identified,
    destination: Destination<'_>,
) -> Decided {
    let started = std::time::Instant::now();
    let Identified { snapshot, identity } = who;
    let Destination {
        target,
        scheme,
        port,
        seen_as,
    } = destination;
    let now = Timestamp::now();
    let decision = state
        .stats
        .decide(&snapshot, &identity.subject(), target, now);
    let pending = state.records.as_ref().map(|sink| {
        let facts = RequestFacts {
            client: client.peer,
            identity: &identity,
            method: request.method().as_str(),
            scheme,
            target,
            port,
            decision: &decision,
            seen_as,
            user_agent: request
                .headers()
                .get(USER_AGENT)
                .and_then(|v| v.to_str().ok()),
        };
        PendingRecord::new(facts.record(0), Arc::clone(sink), started)
    });
    Decided {
        snapshot,
        identity,
        decision,
        now,
        pending,
    }
}

/// How a blocked request is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum BlockAnswer {
    /// The block page for a plain-HTTP request; its review form posts to the proxy.
    PlainHttp,
    /// The block page inside a decrypted tunnel; its review form posts to the page's
    /// own HTTPS origin, which [`handle_decrypted`] answers.
    Decrypted,
    /// The short refusal of a CONNECT.
    Connect,
}

/// What was blocked, for [`blocked`].
pub(crate) struct Blocked<'a> {
    /// The decision that blocked it.
    pub(crate) decision: &'a Decision,
    /// The address as requested.
    pub(crate) target: &'a str,
    /// When it was decided.
    pub(crate) now: Timestamp,
    /// Which kind of answer the client gets.
    pub(crate) answer: BlockAnswer,
}

/// The answer to a blocked request: the block page, or for CONNECT a short refusal.
pub(crate) fn blocked(
    auth: &Authenticator,
    snapshot: &Snapshot,
    identity: &Identity,
    client: &ClientContext,
    blocked: Blocked<'_>,
) -> Response<ResponseBody> {
    let Blocked {
        decision,
        target,
        now,
        answer,
    } = blocked;
    info!(
        client = %client.peer,
        user = identity.user.as_deref(),
        role = identity.role.as_str(),
        target,
        rule = decision.rule,
        categories = ?decision.categories,
        "blocked"
    );
    let at = filter::local_time(snapshot, now);
    let review = match answer {
        BlockAnswer::Decrypted => ReviewTarget::SameOrigin,
        BlockAnswer::PlainHttp | BlockAnswer::Connect => ReviewTarget::Proxy(client.local),
    };
    let review_action = review.action();
    let review_token = auth.form_token(TokenPurpose::Review, client.peer.ip());
    let info = filter::block_info(
        decision,
        identity,
        target,
        &at,
        Some(&review_action),
        Some(&review_token),
    );
    crate::metrics::RequestOutcome::blocked(if answer == BlockAnswer::Connect {
        block_page::connect_refusal(&info)
    } else {
        block_page::page(&info)
    })
}

/// Routes a request for a search engine or YouTube to the provider's enforced
/// endpoint and forces the SafeSearch parameter, as `restrictions` require.
/// `host` is the normalised host, so `WWW.GOOGLE.COM.` is recognised as Google.
fn enforce_safesearch(
    request: &mut Request<Incoming>,
    authority: &Authority,
    host: &str,
    restrictions: Restrictions,
    target: &str,
) -> Result<(), Box<Response<ResponseBody>>> {
    if restrictions == Restrictions::default() {
        return Ok(());
    }
    let original_query = request.uri().query().map(str::to_owned);
    let query = safesearch::mark_plain_request(
        host,
        original_query.as_deref(),
        request.headers_mut(),
        restrictions,
    );
    let endpoint = safesearch::enforced_endpoint(host, restrictions);
    if query.is_none() && endpoint.is_none() {
        return Ok(());
    }
    let mut parts = request.uri().clone().into_parts();
    if let Some(endpoint) = endpoint {
        let rewritten = match authority.port_u16() {
            Some(port) => format!("{endpoint}:{port}"),
            None => endpoint.to_owned(),
        };
        parts.authority = Authority::try_from(rewritten).ok();
    }
    if let Some(query) = query {
        let path = request.uri().path();
        parts.path_and_query = format!("{path}?{query}").parse().ok();
    }
    match Uri::from_parts(parts) {
        Ok(uri) => {
            *request.uri_mut() = uri;
            Ok(())
        }
        Err(_) => Err(Box::new(error_page::page(
            StatusCode::BAD_REQUEST,
            "bad-request",
            target,
            "The address could not be rewritten for SafeSearch.",
        ))),
    }
}

/// `Host` as RFC 9112 wants it from a proxy: the target's authority without userinfo.
fn host_header(authority: &Authority) -> HeaderValue {
    let text = authority.as_str();
    let without_userinfo = text.rsplit_once('@').map_or(text, |(_, host)| host);
    HeaderValue::from_str(without_userinfo).unwrap_or_else(|_| HeaderValue::from_static(""))
}

/// Finds SafeGate's own connect error inside hyper-util's, or describes what hyper saw.
fn upstream_error(error: &hyper_util::client::legacy::Error, host: &str) -> UpstreamError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(current) = source {
        if let Some(upstream) = current.downcast_ref::<UpstreamError>() {
            return upstream.clone();
        }
        source = current.source();
    }
    let mut reason = error.to_string();
    let mut cause = std::error::Error::source(error);
    while let Some(inner) = cause {
        reason.push_str(": ");
        reason.push_str(&inner.to_string());
        cause = inner.source();
    }
    UpstreamError::Protocol {
        host: host.to_owned(),
        reason,
    }
}

/// After a `101 Switching Protocols`, copies bytes between client and origin until
/// either side closes.
fn relay_upgraded(
    state: &Arc<ProxyState>,
    client: hyper::upgrade::OnUpgrade,
    origin: hyper::upgrade::OnUpgrade,
    target: String,
    mut record: Option<PendingRecord>,
) {
    let relay_state = Arc::clone(state);
    state.tasks.spawn(async move {
        let bytes = Arc::new(TunnelBytes::default());
        if let Some(record) = &mut record {
            record.follow_tunnel(Arc::clone(&bytes));
        }
        let (client, origin) = match tokio::try_join!(client, origin) {
            Ok(pair) => pair,
            Err(error) => {
                warn!(%error, target, "upgrade failed");
                return;
            }
        };
        let _ = tunnel::relay_counted(
            &relay_state,
            TokioIo::new(client),
            TokioIo::new(origin),
            &target,
            bytes,
        )
        .await;
        drop(record);
    });
}
