//! A decrypted CONNECT tunnel. After the 200, the client's ClientHello is read and its
//! server name checked as for any tunnel (domain fronting, a blocked name); then TLS is
//! terminated with a leaf certificate for that name (or the CONNECT host when the
//! client sent none) signed by the school CA, and the connection is served as HTTP/2
//! or HTTP/1.1, as ALPN agreed. Each request becomes `https://host[:port]/path` (its
//! `:authority` or `Host`, else the CONNECT host) and goes through the ordinary
//! request path for the person identified at CONNECT, with a fresh policy snapshot:
//! URL rules, file rules, SafeSearch, the block page, and a visit record `Decrypted`
//! with path, query and search terms. The block page's review form posts to the
//! page's own origin, and SafeGate answers a `POST /safegate/review` on any decrypted
//! host itself, without contacting the origin. A device
//! without the school CA fails the handshake; that is logged with a hint and the
//! connection closed.

use crate::event_log::{BAD_REQUESTS, throttled};
use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{Method, Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use safegate_store::SeenAs;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::auth::Identity;
use crate::body::ResponseBody;
use crate::client_io::Activity;
use crate::error_page;
use crate::forward;
use crate::hello::{Opening, read_opening};
use crate::intake::ClientContext;
use crate::local_pages;
use crate::pipeline::{self, Identified, Ledger, NameCheck};
use crate::relay::{ClientStream, Prefixed, take_apart};
use crate::state::ProxyState;
use crate::userinfo::target_without_userinfo;
use crate::visit_record::PendingRecord;

/// A CONNECT the policy decrypts, decided and finished by `tunnel::open`.
pub(crate) struct Tunnel {
    /// The CONNECT host's decision, for the server name check and the requests inside.
    pub(crate) check: NameCheck,
    /// The CONNECT host as written (IPv6 in brackets).
    pub(crate) connect_host: String,
    pub(crate) port: u16,
    /// Whether the CONNECT host itself is blocked.
    pub(crate) host_blocked: bool,
    /// The CONNECT's own record: submitted only when no request inside is served
    /// (refused, or a blocked host whose handshake failed); otherwise the requests
    /// inside are the record and it is discarded.
    pub(crate) record: Option<PendingRecord>,
}

/// After the 200 to an allowed CONNECT whose host the policy decrypts: decryption in a
/// task.
pub(crate) fn open(
    state: &Arc<ProxyState>,
    client: &ClientContext,
    request: Request<Incoming>,
    tunnel: Tunnel,
) {
    let inside = Arc::new(ClientContext {
        peer: client.peer,
        local: client.local,
        activity: Activity::new(),
        intake: client.intake,
        // The decrypted tunnel keeps the CONNECT connection's place while open.
        slot: Arc::clone(&client.slot),
        // Requests inside are the CONNECT's person's, as the CONNECT was.
        log_in: client.log_in.inherit(),
    });
    let state = Arc::clone(state);
    let tasks = state.tasks.clone();
    tasks.spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => match take_apart(upgraded) {
                ClientStream::Tcp(stream, read) => tunnel.run(state, inside, stream, read).await,
                ClientStream::Other(stream) => {
                    tunnel.run(state, inside, stream, Vec::new()).await;
                }
            },
            Err(error) => debug!(%error, "client left before the decrypted tunnel opened"),
        }
    });
}

impl Tunnel {
    async fn run<C>(
        self,
        state: Arc<ProxyState>,
        inside: Arc<ClientContext>,
        mut stream: C,
        mut buf: Vec<u8>,
    ) where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Some(decrypting) = &state.decryption else {
            return;
        };
        let _open = state.stats.tunnel_opened();
        let check = &self.check;
        let hello = match read_opening(&mut stream, &mut buf, None, state.header_read_timeout).await
        {
            Opening::Hello(hello) => hello,
            Opening::Unreadable(error) => {
                let decision = pipeline::refusal(
                    "tls-unreadable",
                    format!("the TLS ClientHello cannot be read: {error}"),
                );
                check.refuse(&mut stream, &decision, None).await;
                self.refused(&decision);
                return;
            }
            _ => {
                debug!(client = %check.peer, host = self.connect_host, "no TLS ClientHello in a tunnel to decrypt; closed");
                self.unserved();
                return;
            }
        };
        if let Some(decision) = check.refusal(&state, &hello) {
            let server_name = hello.server_name.as_deref();
            self.refuse_hello(&state, stream, buf, decision, server_name)
                .await;
            return;
        }
        let name = hello
            .server_name
            .clone()
            .unwrap_or_else(|| check.connect.host.as_str().to_owned());
        let config = match decrypting.setup.leaves().server_config(&name) {
            Ok(config) => config,
            Err(error) => {
                warn!(%error, host = name, "no certificate for a decrypted site; connection closed");
                self.discard();
                return;
            }
        };
        let accept = TlsAcceptor::from(config).accept(Prefixed::new(buf, stream));
        let tls = match tokio::time::timeout(state.header_read_timeout, accept).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                throttled!(BAD_REQUESTS, client = %check.peer, host = name, %error, "TLS handshake with the client failed (is the school CA installed on this device?)");
                self.unserved();
                return;
            }
            Err(_) => {
                debug!(client = %check.peer, host = name, "TLS handshake timed out");
                self.unserved();
                return;
            }
        };
        let identity = check.identity.clone();
        let (connect_host, port) = (self.connect_host.clone(), self.port);
        self.discard();
        serve(
            &state,
            inside,
            identity,
            &connect_host,
            port,
            TokioIo::new(tls),
            &name,
        )
        .await;
    }

    /// A refused ClientHello: the block page over TLS when it gets one
    /// ([`super::block_pages::page_for_name`]), else the TLS alert; recorded as blocked.
    async fn refuse_hello<C>(
        self,
        state: &Arc<ProxyState>,
        mut stream: C,
        buf: Vec<u8>,
        decision: safegate_policy::Decision,
        server_name: Option<&str>,
    ) where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let page = super::block_pages::page_for_name(
            state,
            &self.check,
            decision.clone(),
            server_name,
            self.port,
        );
        match page {
            Some(blocked) => {
                self.refused(&decision);
                blocked.log("TLS server name");
                super::block_pages::serve(state, blocked, stream, buf).await;
            }
            None => {
                self.check.refuse(&mut stream, &decision, server_name).await;
                self.refused(&decision);
            }
        }
    }

    /// The ClientHello was refused: the CONNECT's record says blocked, with `decision`.
    fn refused(mut self, decision: &safegate_policy::Decision) {
        if let Some(record) = &mut self.record {
            record.block(decision);
            record.finish(StatusCode::FORBIDDEN.as_u16(), None);
        }
    }

    /// The tunnel ended before any request inside (a device without the school CA
    /// fails the handshake): a blocked host is still a blocked attempt on record.
    fn unserved(mut self) {
        match self.record.take() {
            Some(mut record) if self.host_blocked => {
                record.finish(StatusCode::FORBIDDEN.as_u16(), None);
            }
            Some(record) => record.discard(),
            None => {}
        }
    }

    /// Requests inside are recorded instead of the CONNECT.
    fn discard(mut self) {
        if let Some(record) = self.record.take() {
            record.discard();
        }
    }
}

/// Serves the decrypted connection as HTTP/2 or HTTP/1.1 (as ALPN agreed) until it
/// ends or the shutdown grace cuts it off.
async fn serve<T>(
    state: &Arc<ProxyState>,
    inside: Arc<ClientContext>,
    identity: Identity,
    connect_host: &str,
    port: u16,
    tls: TokioIo<T>,
    name: &str,
) where
    T: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let service_state = Arc::clone(state);
    let connect_host = connect_host.to_owned();
    let service = service_fn(move |request: Request<Incoming>| {
        let state = Arc::clone(&service_state);
        let client = Arc::clone(&inside);
        let identity: Identity = identity.clone();
        let uri = https_uri(&request, &connect_host, port);
        async move {
            let mut request = request;
            let ledger = Ledger::begin(
                &state,
                &client,
                request.method().as_str(),
                uri.as_ref().and_then(Uri::host),
            );
            let response = match uri {
                Some(uri) => {
                    *request.uri_mut() = uri;
                    handle(&state, &client, ledger, request, identity).await
                }
                None => {
                    let page = error_page::page(
                        StatusCode::BAD_REQUEST,
                        "bad-host",
                        &request.uri().to_string(),
                        "The request's host is not valid.",
                    );
                    pipeline::finish(ledger, page, None)
                }
            };
            Ok::<_, Infallible>(response)
        }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(state.header_read_timeout)
        .keep_alive(true);
    builder.http2().timer(TokioTimer::new());
    let connection = builder.serve_connection_with_upgrades(tls, service);
    tokio::select! {
        served = connection => {
            if let Err(error) = served {
                debug!(%error, host = name, "decrypted connection ended");
            }
        }
        () = state.cut_off.cancelled() => {}
    }
}

/// A request inside a decrypted tunnel, already rewritten to `https://host/path`, for
/// the person identified at CONNECT: the same path as a plain-HTTP request, over TLS
/// to the origin, with a fresh policy snapshot.
///
/// Except the block page's review form: a decrypted block page posts it to its own
/// origin (`ReviewTarget::SameOrigin`), so a `POST` to [`local_pages::REVIEW_PATH`] on
/// any decrypted host is answered here, for the person identified at CONNECT, and
/// never reaches the origin (`/safegate/` is SafeGate's namespace). Other methods on
/// that path go to the origin as usual.
async fn handle(
    state: &Arc<ProxyState>,
    client: &ClientContext,
    ledger: Ledger<'_>,
    request: Request<Incoming>,
    identity: Identity,
) -> Response<ResponseBody> {
    if request.method() == Method::POST && request.uri().path() == local_pages::REVIEW_PATH {
        let page = pipeline::answer_review(state, client.peer.ip(), &identity, request).await;
        return pipeline::finish(ledger, page, None);
    }
    let who = Identified {
        snapshot: state.policy.load_full(),
        identity,
    };
    let target = target_without_userinfo(request.uri());
    forward::forward(
        state,
        client,
        ledger,
        request,
        who,
        SeenAs::Decrypted,
        target,
    )
    .await
}

/// `https://` plus the request's authority (`:authority` in HTTP/2, `Host` in
/// HTTP/1.1; the CONNECT host when it has neither), with the tunnel's port when the
/// authority has none and it is not 443, plus the path. `None` for a host that is not
/// `host[:port]`.
fn https_uri<B>(request: &Request<B>, connect_host: &str, port: u16) -> Option<Uri> {
    let named = match request.uri().authority() {
        Some(authority) => authority.as_str().to_owned(),
        None => match request.headers().get(HOST) {
            Some(host) => host.to_str().ok()?.trim().to_owned(),
            None => connect_host.to_owned(),
        },
    };
    let authority = Authority::from_str(&named).ok()?;
    if authority.as_str().contains('@') || authority.host().is_empty() {
        return None;
    }
    let authority = match authority.port_u16() {
        None if port != 443 => Authority::from_str(&format!("{}:{port}", authority.host())).ok()?,
        _ => authority,
    };
    let path = request
        .uri()
        .path_and_query()
        .map_or("/", |path| path.as_str());
    Uri::builder()
        .scheme(Scheme::HTTPS)
        .authority(authority)
        .path_and_query(path)
        .build()
        .ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn uri(target: &str, host: Option<&str>, port: u16) -> Option<String> {
        let mut request = Request::builder().uri(target);
        if let Some(host) = host {
            request = request.header(HOST, host);
        }
        https_uri(&request.body(()).unwrap(), "connect.example", port).map(|u| u.to_string())
    }

    #[test]
    fn requests_inside_a_tunnel_get_their_https_address() {
        // HTTP/1.1: origin-form and Host.
        assert_eq!(
            uri("/a?b=c", Some("www.example.org"), 443).as_deref(),
            Some("https://www.example.org/a?b=c")
        );
        // The tunnel's port when Host has none and it is not 443.
        assert_eq!(
            uri("/", Some("www.example.org"), 8443).as_deref(),
            Some("https://www.example.org:8443/")
        );
        assert_eq!(
            uri("/", Some("www.example.org:9443"), 8443).as_deref(),
            Some("https://www.example.org:9443/")
        );
        // HTTP/2: the :authority in the URI wins.
        assert_eq!(
            uri("https://h2.example.org/x", Some("ignored.example"), 443).as_deref(),
            Some("https://h2.example.org/x")
        );
        // Neither: the CONNECT host.
        assert_eq!(
            uri("/p", None, 443).as_deref(),
            Some("https://connect.example/p")
        );
        // User info or garbage is refused.
        assert_eq!(uri("/", Some("user@evil.example"), 443), None);
        assert_eq!(uri("/", Some("a b"), 443), None);
    }
}
