//! CONNECT tunnels: check the port, decide the host (through the
//! [`pipeline`](crate::pipeline), which also counts the CONNECT and finishes its
//! record, the record then following the relay), then either decrypt (the policy's
//! `[decrypt]` section names the host and the school CA is set up: see
//! [`crate::tls`]) or tunnel: connect to the origin (DNS, destination guard, timeout),
//! answer 200, read the client's TLS ClientHello and check its server name, then copy
//! bytes both ways with half-close until both sides are done or the tunnel has been
//! idle for `proxy.tunnel_idle_timeout`.
//!
//! **The server name is checked too.** A ClientHello whose server name (SNI) differs
//! from the CONNECT host is domain fronting (an allowed host in CONNECT, another site
//! inside TLS) and is refused when the policy says `sni_mismatch = "block"` (the
//! default); with `"allow"` the server name is decided on its own. With Encrypted
//! Client Hello the clear-text name is the provider's public name, which is decided
//! like any other name rather than taken for fronting. A CONNECT to an IP address is
//! decided on the server name as well. A refused ClientHello gets a TLS
//! `access_denied` alert, is never passed to the origin, and its record says blocked
//! with the rule (`sni-mismatch`, `tls-unreadable`, or the rule that blocked the name).
//! Protocols other than TLS in a tunnel, and protocols where the server speaks first,
//! are relayed unchanged: the CONNECT host was decided.
//!
//! **Block pages over TLS.** With the school CA set up and `decrypt.block_pages` on, a
//! blocked CONNECT (and a refused server name, when neither name is never-decrypt) is
//! answered with the block page over TLS instead ([`crate::tls::block_pages`]): the
//! `200`, a leaf for the server name, the page for every request, no origin contacted.
//! Otherwise a blocked CONNECT gets the `403` with the reason in `X-SafeGate-Why`.

use std::sync::Arc;

use http::header::USER_AGENT;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use safegate_policy::RequestTarget;
use safegate_store::SeenAs;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tracing::debug;

use crate::body::ResponseBody;
use crate::error_page;
use crate::hello::{Opening, read_opening};
use crate::intake::ClientContext;
use crate::pipeline::{self, BlockAnswer, Destination, Identified, Ledger, NameCheck};
use crate::relay::{self, ClientStream, take_apart};
use crate::safesearch::{self, Restrictions};
use crate::state::ProxyState;
use crate::tls::block_pages::{self, Blocked};
use crate::visit_record::{Direction, PendingRecord, TunnelBytes};

/// Answers a CONNECT request from an identified client, and finishes its ledger.
pub(crate) async fn open(
    state: &Arc<ProxyState>,
    client: &ClientContext,
    mut ledger: Ledger<'_>,
    request: Request<Incoming>,
    who: Identified,
) -> Response<ResponseBody> {
    let target = request.uri().to_string();
    if let Some(page) = pipeline::store_full_refusal(state, &target) {
        return pipeline::finish(ledger, page, None);
    }
    let (authority, port, normalised) = match connect_target(state, &request, &target) {
        Ok(parts) => parts,
        Err(page) => return pipeline::finish(ledger, *page, None),
    };
    let decrypt = state.decryption.is_some() && who.snapshot.decrypt(&normalised).decrypt;
    let user_agent = user_agent(&request);
    let decided = pipeline::decide(
        state,
        &mut ledger,
        who,
        Destination {
            target: &normalised,
            scheme: "https",
            port,
            seen_as: SeenAs::ConnectHost,
            method: "CONNECT",
            user_agent: user_agent.as_deref(),
        },
    );
    if decrypt {
        // Every request inside is decided (and recorded) on its full address,
        // blocked host or not, so a blocked site gets the real block page.
        let mut response = Response::new(ResponseBody::empty());
        let record = pipeline::finish_tunnel(ledger, Some(&mut response), 200, None);
        let host_blocked = decided.decision.is_blocked();
        let tunnel = crate::tls::intercept::Tunnel {
            check: NameCheck::of(decided, normalised, client.peer),
            connect_host: authority.host().to_owned(),
            port,
            host_blocked,
            record,
        };
        crate::tls::intercept::open(state, client, request, tunnel);
        return response;
    }
    if decided.decision.is_blocked() {
        if block_pages::applies(state, &decided.snapshot, &normalised) {
            let blocked = Blocked::of_decided(decided, client.peer, normalised.host.as_str(), port);
            return block_pages::answer_connect(state, client, ledger, request, blocked);
        }
        let refusal = pipeline::block(
            state,
            client,
            &decided,
            &decided.decision,
            &target,
            BlockAnswer::Connect,
            request.headers(),
        );
        return pipeline::finish(ledger, refusal, None);
    }
    let restrictions = Restrictions::for_identity(&decided.snapshot, &decided.identity);
    // SafeSearch without decryption: the tunnel goes to the provider's enforced
    // endpoint; the browser's TLS still names the original host.
    let connect_host = safesearch::enforced_endpoint(normalised.host.as_str(), restrictions)
        .unwrap_or(authority.host());
    let origin = match state.connector.connect(connect_host, port).await {
        Ok(origin) => origin,
        Err(error) => {
            debug!(%error, target, "tunnel connect failed");
            let page = error_page::upstream_failure(&error, &target);
            return pipeline::finish(ledger, page, Some(error.kind()));
        }
    };
    let mut response = Response::new(ResponseBody::empty());
    let record = pipeline::finish_tunnel(ledger, Some(&mut response), 200, None);
    let check = NameCheck::of(decided, normalised, client.peer);
    spawn_relay(
        state,
        client,
        request,
        origin,
        (target, port),
        record,
        check,
    );
    response
}

/// The CONNECT target: its authority, port and normalised host; or the page refusing
/// it (no port, a port SafeGate does not tunnel to, a host that is not valid).
fn connect_target(
    state: &ProxyState,
    request: &Request<Incoming>,
    target: &str,
) -> Result<(http::uri::Authority, u16, RequestTarget), Box<Response<ResponseBody>>> {
    let Some(authority) = request.uri().authority().cloned() else {
        return Err(Box::new(error_page::page(
            StatusCode::BAD_REQUEST,
            "bad-request",
            target,
            "CONNECT needs a host:port target.",
        )));
    };
    let Some(port) = authority.port_u16() else {
        return Err(Box::new(error_page::page(
            StatusCode::BAD_REQUEST,
            "bad-request",
            target,
            "CONNECT needs a port in its target.",
        )));
    };
    if !state.connect_ports.contains(&port) {
        return Err(Box::new(error_page::page(
            StatusCode::FORBIDDEN,
            "connect-port-denied",
            target,
            &format!(
                "SafeGate only opens tunnels to the ports it is configured for; {port} is not one of them."
            ),
        )));
    }
    match RequestTarget::from_parts(authority.host(), None) {
        Ok(normalised) => Ok((authority, port, normalised)),
        Err(_) => Err(Box::new(error_page::page(
            StatusCode::BAD_REQUEST,
            "bad-host",
            target,
            "The tunnel's host name is not valid.",
        ))),
    }
}

/// After the 200: takes the client's side of the CONNECT, checks its ClientHello and
/// relays, in a task; the record is submitted when the tunnel ends.
fn spawn_relay(
    state: &Arc<ProxyState>,
    client: &ClientContext,
    request: Request<Incoming>,
    origin: TcpStream,
    (target, port): (String, u16),
    mut record: Option<PendingRecord>,
    check: NameCheck,
) {
    // The record reads the relay's counters when it is submitted, so it has the bytes
    // however the tunnel ends (closed, idle, broken, or its task cut off).
    let bytes = Arc::new(TunnelBytes::default());
    if let Some(record) = &mut record {
        record.follow_tunnel(Arc::clone(&bytes));
    }
    let tunnel_state = Arc::clone(state);
    // The tunnel keeps the connection's place under the limits while open.
    let slot = Arc::clone(&client.slot);
    state.tasks.spawn(async move {
        let _slot = slot;
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => {
                let tunnel = Tunnel {
                    state: &tunnel_state,
                    origin,
                    target: &target,
                    port,
                    bytes,
                    record: &mut record,
                    check: &check,
                };
                match take_apart(upgraded) {
                    ClientStream::Tcp(stream, read) => tunnel.run(stream, read).await,
                    ClientStream::Other(stream) => tunnel.run(stream, Vec::new()).await,
                }
            }
            Err(error) => debug!(%error, target, "client left before the tunnel opened"),
        }
        // The record is submitted here, with the tunnel's lifetime as its duration.
        drop(record);
    });
}

/// A tunnel between the 200 and the end of the relay.
struct Tunnel<'a> {
    state: &'a Arc<ProxyState>,
    origin: TcpStream,
    target: &'a str,
    port: u16,
    bytes: Arc<TunnelBytes>,
    record: &'a mut Option<PendingRecord>,
    check: &'a NameCheck,
}

impl Tunnel<'_> {
    /// Checks the ClientHello, then relays (or refuses).
    async fn run<C>(self, mut client: C, mut buf: Vec<u8>)
    where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            state,
            mut origin,
            target,
            port,
            bytes,
            record,
            check,
        } = self;
        let opening = read_opening(
            &mut client,
            &mut buf,
            Some(&origin),
            state.header_read_timeout,
        )
        .await;
        let refusal = match &opening {
            Opening::Hello(hello) => check
                .refusal(state, hello)
                .map(|decision| (decision, hello.server_name.clone())),
            Opening::Unreadable(error) => Some((
                pipeline::refusal(
                    "tls-unreadable",
                    format!("the TLS ClientHello cannot be read: {error}"),
                ),
                None,
            )),
            Opening::TimedOut => {
                debug!(
                    target,
                    "no ClientHello within proxy.header_read_timeout; tunnel closed"
                );
                return;
            }
            Opening::NotTls | Opening::Closed | Opening::ServerFirst => None,
        };
        if let Some((decision, server_name)) = refusal {
            if let Some(record) = record.as_mut() {
                record.block(&decision);
                record.finish(StatusCode::FORBIDDEN.as_u16(), None);
            }
            if let Some(blocked) = block_pages::page_for_name(
                state,
                check,
                decision.clone(),
                server_name.as_deref(),
                port,
            ) {
                // No byte went to the origin; the page is served without it.
                drop(origin);
                blocked.log("TLS server name");
                block_pages::serve(state, blocked, client, buf).await;
                return;
            }
            check
                .refuse(&mut client, &decision, server_name.as_deref())
                .await;
            return;
        }
        if !buf.is_empty() {
            let sent =
                tokio::time::timeout(state.tunnel_idle_timeout, origin.write_all(&buf)).await;
            if !matches!(sent, Ok(Ok(()))) {
                debug!(target, "the origin did not take the tunnel's first bytes");
                return;
            }
            bytes.add(Direction::Up, buf.len() as u64);
        }
        relay::relay_counted(state, client, origin, target, bytes).await;
    }
}

/// The user agent of a request, for records made after it is gone.
pub(crate) fn user_agent(request: &Request<Incoming>) -> Option<String> {
    request
        .headers()
        .get(USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
}
