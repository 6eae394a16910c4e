//! Forwarding one request to its origin: a plain-HTTP request (absolute-form from an
//! explicit client, or a transparent one rewritten to it) or a request inside a
//! decrypted tunnel, already rewritten to `https://host/path`. It is decided through
//! the [`pipeline`](crate::pipeline); an allowed request is sent on with hop-by-hop
//! headers (`Proxy-Authorization` among them) stripped, `Via` added and SafeSearch
//! enforced; the origin's response is checked against the file rules, scanned for
//! weighted phrases when it is a page ([`content_gate`]) and streamed back, or, after `101 Switching Protocols`, the upgraded connection is relayed.
//! Every exit goes through `pipeline::finish`.

use std::sync::Arc;

use http::header::{CONTENT_DISPOSITION, CONTENT_TYPE, HOST, HeaderValue, USER_AGENT};
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use safegate_policy::RequestTarget;
use safegate_store::SeenAs;
use tracing::{debug, warn};

use crate::body::{ResponseBody, UpstreamBody};
use crate::content_gate::{self, Held};
use crate::error::UpstreamError;
use crate::error_page;
use crate::hop_by_hop::{append_via, strip_hop_by_hop, wants_upgrade};
use crate::intake::ClientContext;
use crate::pipeline::{self, BlockAnswer, Decided, Destination, Identified, Ledger};
use crate::relay;
use crate::safesearch::{self, Restrictions};
use crate::state::ProxyState;
use crate::userinfo::strip_userinfo;
use crate::visit_record::{PendingRecord, TunnelBytes};

/// Plain HTTP or decrypted HTTPS: what differs between the two.
#[derive(Clone, Copy)]
struct Way {
    default_port: u16,
    answer: BlockAnswer,
    seen_as: SeenAs,
}

impl Way {
    fn of(seen_as: SeenAs) -> Self {
        if seen_as == SeenAs::Decrypted {
            Self {
                default_port: 443,
                answer: BlockAnswer::Decrypted,
                seen_as,
            }
        } else {
            Self {
                default_port: 80,
                answer: BlockAnswer::PlainHttp,
                seen_as,
            }
        }
    }

    fn decrypted(self) -> bool {
        self.seen_as == SeenAs::Decrypted
    }

    fn scheme(self) -> Scheme {
        if self.decrypted() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }
}

/// A page answering the request in place of the origin, and the upstream failure
/// kind it stands for, if any.
type Failed = (Response<ResponseBody>, Option<&'static str>);

/// Forwards a plain-HTTP request (`seen_as` `PlainHttp`) or a decrypted HTTPS one
/// (`Decrypted`), and finishes its ledger; `target` is its address without user info,
/// as logged and shown on pages.
pub(crate) async fn forward(
    state: &Arc<ProxyState>,
    client: &ClientContext,
    mut ledger: Ledger<'_>,
    request: Request<Incoming>,
    who: Identified,
    seen_as: SeenAs,
    target: String,
) -> Response<ResponseBody> {
    if let Some(page) = pipeline::store_full_refusal(state, &target) {
        return pipeline::finish(ledger, page, None);
    }
    let way = Way::of(seen_as);
    let (authority, normalised) = match destination(state, &request, way, &target) {
        Ok(parts) => parts,
        Err(page) => return pipeline::finish(ledger, *page, None),
    };
    let user_agent = request
        .headers()
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok());
    let destination = Destination {
        target: &normalised,
        scheme: if way.decrypted() { "https" } else { "http" },
        port: authority.port_u16().unwrap_or(way.default_port),
        seen_as,
        method: request.method().as_str(),
        user_agent,
    };
    let decided = pipeline::decide(state, &mut ledger, who, destination);
    if decided.decision.is_blocked() {
        let page = pipeline::block(
            state,
            client,
            &decided,
            &decided.decision,
            &target,
            way.answer,
            request.headers(),
        );
        return pipeline::finish(ledger, page, None);
    }
    let asked = block_page_headers(request.headers());
    let method = request.method().clone();
    let restrictions = Restrictions::for_identity(&decided.snapshot, &decided.identity);
    let (request, client_upgrade) = match prepare(
        state,
        request,
        &authority,
        &normalised,
        restrictions,
        &target,
    ) {
        Ok(prepared) => prepared,
        Err(page) => return pipeline::finish(ledger, *page, None),
    };
    let request = request.map(|body| UpstreamBody::new(body, ledger.upload_counter()));
    let host = authority.host();
    let response = match send(state, request, way, host, &target).await {
        Ok(response) => response,
        Err((page, failure)) => return pipeline::finish(ledger, page, failure),
    };
    let answer = OriginAnswer {
        client,
        decided: &decided,
        normalised: &normalised,
        target,
        way,
        asked,
        method,
    };
    answer
        .deliver(state, ledger, response, client_upgrade)
        .await
}

/// The request's authority and its normalised target; or the page refusing it (`400`
/// for an address that cannot be forwarded, `403` for a plain-HTTP port outside
/// `proxy.http_ports`, refused before anything is decided or connected, like a
/// CONNECT to a port outside `proxy.connect_ports`).
fn destination(
    state: &ProxyState,
    request: &Request<Incoming>,
    way: Way,
    target: &str,
) -> Result<(Authority, RequestTarget), Box<Response<ResponseBody>>> {
    if request.uri().scheme() != Some(&way.scheme()) {
        return Err(Box::new(error_page::page(
            StatusCode::BAD_REQUEST,
            "unsupported-scheme",
            target,
            "SafeGate forwards http:// addresses; browsers reach https:// sites with CONNECT.",
        )));
    }
    let Some(authority) = request.uri().authority().cloned() else {
        return Err(Box::new(error_page::page(
            StatusCode::BAD_REQUEST,
            "bad-request",
            target,
            "The address has no host.",
        )));
    };
    let port = authority.port_u16().unwrap_or(way.default_port);
    // A decrypted request's port was checked when its tunnel was opened.
    if !way.decrypted() && !state.http_ports.contains(port) {
        return Err(Box::new(error_page::page(
            StatusCode::FORBIDDEN,
            "http-port-denied",
            target,
            &format!(
                "SafeGate only forwards plain-HTTP requests to the ports it is configured for; {port} is not one of them."
            ),
        )));
    }
    let path_and_query = request.uri().path_and_query().map_or("/", |p| p.as_str());
    match RequestTarget::from_parts(authority.host(), Some(path_and_query)) {
        Ok(normalised) => Ok((authority, normalised)),
        Err(_) => Err(Box::new(error_page::page(
            StatusCode::BAD_REQUEST,
            "bad-host",
            target,
            "The address's host name is not valid.",
        ))),
    }
}

/// The request ready for the origin, and the client's side of the upgrade it asks for.
type Prepared = (Request<Incoming>, Option<OnUpgrade>);

/// The request as it goes to the origin: hop-by-hop headers out, `Host` and `Via` in,
/// no user info, SafeSearch enforced; with the client's side of an upgrade it asks for.
fn prepare(
    state: &ProxyState,
    mut request: Request<Incoming>,
    authority: &Authority,
    normalised: &RequestTarget,
    restrictions: Restrictions,
    target: &str,
) -> Result<Prepared, Box<Response<ResponseBody>>> {
    let upgrade = wants_upgrade(request.headers());
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut request));
    let headers = request.headers_mut();
    strip_hop_by_hop(headers, upgrade);
    headers.insert(HOST, host_header(authority));
    append_via(headers, &state.via);
    // A `user:password@` in the address goes no further (not into the connection
    // pool's key, nor its log lines).
    strip_userinfo(request.uri_mut());
    enforce_safesearch(
        &mut request,
        authority,
        normalised.host.as_str(),
        restrictions,
        target,
    )?;
    Ok((request, client_upgrade))
}

/// Sends the request to the origin within `upstream.response_timeout`; a failure is
/// answered with a page saying what went wrong.
async fn send(
    state: &ProxyState,
    request: Request<UpstreamBody>,
    way: Way,
    host: &str,
    target: &str,
) -> Result<Response<Incoming>, Failed> {
    let sent = tokio::time::timeout(state.response_timeout, async {
        match &state.decryption {
            Some(decryption) if way.decrypted() => {
                // The origin's HTTP version is its own (ALPN); the client's is not.
                let mut request = request;
                *request.version_mut() = http::Version::HTTP_11;
                decryption.client.request(request).await
            }
            _ => state.client.request(request).await,
        }
    })
    .await;
    match sent {
        Ok(Ok(response)) => Ok(response),
        Ok(Err(error)) => {
            // A certificate that fails verification gets a page saying so.
            if let Some(page) = way
                .decrypted()
                .then(|| crate::tls::certificate_refusal(&error, host, target))
                .flatten()
            {
                return Err((page, Some("upstream-certificate")));
            }
            let error = upstream_error(&error, host);
            debug!(%error, target, "upstream failed");
            Err((
                error_page::upstream_failure(&error, target),
                Some(error.kind()),
            ))
        }
        Err(_) => {
            let error = UpstreamError::ResponseTimeout {
                host: host.to_owned(),
                seconds: state.response_timeout.as_secs(),
            };
            Err((
                error_page::upstream_failure(&error, target),
                Some(error.kind()),
            ))
        }
    }
}

/// What answering the origin's response needs to know of the request.
struct OriginAnswer<'a> {
    client: &'a ClientContext,
    decided: &'a Decided,
    normalised: &'a RequestTarget,
    target: String,
    way: Way,
    /// The request's headers that the block page reads ([`block_page_headers`]).
    asked: http::HeaderMap,
    /// The request's method (a `HEAD` response has no body to scan).
    method: http::Method,
}

/// The request headers the block page reads (language, way back), kept for a block
/// decided on the response (a file rule).
fn block_page_headers(headers: &http::HeaderMap) -> http::HeaderMap {
    let mut kept = http::HeaderMap::new();
    for name in [http::header::ACCEPT_LANGUAGE, http::header::REFERER] {
        if let Some(value) = headers.get(&name) {
            kept.insert(name, value.clone());
        }
    }
    kept
}

impl OriginAnswer<'_> {
    /// Relays an upgrade, or checks the file rules and the content and streams the
    /// response back.
    async fn deliver(
        self,
        state: &Arc<ProxyState>,
        mut ledger: Ledger<'_>,
        mut response: Response<Incoming>,
        client_upgrade: Option<OnUpgrade>,
    ) -> Response<ResponseBody> {
        if response.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                let page = error_page::page(
                    StatusCode::BAD_GATEWAY,
                    "upstream-protocol",
                    &self.target,
                    "The site switched protocols without being asked to.",
                );
                return pipeline::finish(ledger, page, Some("upstream-protocol"));
            };
            let origin_upgrade = hyper::upgrade::on(&mut response);
            let headers = response.headers_mut();
            strip_hop_by_hop(headers, true);
            append_via(headers, &state.via);
            let mut response = response.map(ResponseBody::streamed);
            // The upgraded connection's record counts the relayed bytes and is
            // submitted when the relay ends.
            let status = StatusCode::SWITCHING_PROTOCOLS.as_u16();
            let record = pipeline::finish_tunnel(ledger, Some(&mut response), status, None);
            relay_upgraded(
                state,
                Arc::clone(&self.client.slot),
                client_upgrade,
                origin_upgrade,
                self.target,
                record,
            );
            return response;
        }
        if let Some(decision) = self.file_decision(&response) {
            // Dropping the origin's response closes that connection; nothing was sent.
            let page = pipeline::block(
                state,
                self.client,
                self.decided,
                &decision,
                &self.target,
                self.way.answer,
                &self.asked,
            );
            ledger.blocked_later(self.decided.identity.subject().role, &decision);
            return pipeline::finish(ledger, page, None);
        }
        let check = self.decided.snapshot.content_check(
            &self.decided.identity.subject(),
            self.normalised,
            &self.decided.decision,
        );
        if let Some(scanning) = content_gate::start(check, &self.method, &response) {
            return self
                .deliver_scanned(state, ledger, response, scanning)
                .await;
        }
        let headers = response.headers_mut();
        strip_hop_by_hop(headers, false);
        append_via(headers, &state.via);
        pipeline::finish(ledger, response.map(ResponseBody::streamed), None)
    }

    /// Holds and scans a page ([`content_gate`]): the block page when it is over the
    /// limit before anything was sent, else the page streamed on under the scan.
    async fn deliver_scanned(
        self,
        state: &Arc<ProxyState>,
        mut ledger: Ledger<'_>,
        response: Response<Incoming>,
        scanning: content_gate::Scanning,
    ) -> Response<ResponseBody> {
        let role = scanning.check().role;
        let (mut parts, body) = response.into_parts();
        let wait = state.response_timeout.min(content_gate::HOLD_WAIT);
        match scanning.hold(body, wait).await {
            Held::Over { finding, decision } => {
                // Dropping the origin's body closes that connection; nothing was sent.
                ledger.content_found(content_gate::Scanning::score(&finding, false));
                let page = pipeline::block(
                    state,
                    self.client,
                    self.decided,
                    &decision,
                    &self.target,
                    self.way.answer,
                    &self.asked,
                );
                ledger.blocked_later(role, &decision);
                pipeline::finish(ledger, page, None)
            }
            Held::Release(body) => {
                strip_hop_by_hop(&mut parts.headers, false);
                append_via(&mut parts.headers, &state.via);
                let response = Response::from_parts(parts, ResponseBody::scanned(body));
                pipeline::finish(ledger, response, None)
            }
        }
    }

    /// The file rules' decision on the response, when it blocks.
    fn file_decision(&self, response: &Response<Incoming>) -> Option<safegate_policy::Decision> {
        let header = |name| {
            response
                .headers()
                .get(name)
                .and_then(|v: &HeaderValue| v.to_str().ok())
        };
        self.decided
            .snapshot
            .decide_response(
                &self.decided.identity.subject(),
                self.normalised,
                header(CONTENT_TYPE),
                header(CONTENT_DISPOSITION),
                self.decided.now,
            )
            .filter(|decision| decision.is_blocked())
    }
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
/// either side closes, holding the connection's `slot`; the record counts the relayed bytes and is submitted at the end.
fn relay_upgraded(
    state: &Arc<ProxyState>,
    slot: Arc<crate::slots::Slot>,
    client: OnUpgrade,
    origin: OnUpgrade,
    target: String,
    mut record: Option<PendingRecord>,
) {
    let relay_state = Arc::clone(state);
    state.tasks.spawn(async move {
        // The relay keeps the connection's place under the limits while open.
        let _slot = slot;
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
        let _ = relay::relay_counted(
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
