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
//! host itself, without contacting the origin (`service::handle_decrypted`). A device
//! without the school CA fails the handshake; that is logged with a hint and the
//! connection closed.

use std::convert::Infallible;
use std::str::FromStr;
use std::sync::Arc;

use http::header::HOST;
use http::uri::{Authority, Scheme};
use http::{Request, Response, StatusCode, Uri};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use jiff::Timestamp;
use safegate_policy::{Decision, RequestTarget, Verdict};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_rustls::TlsAcceptor;
use tracing::{debug, info, warn};

use crate::body::ResponseBody;
use crate::client_io::Activity;
use crate::error_page;
use crate::filter::Identity;
use crate::service::{self, ClientContext, Identified};
use crate::state::ProxyState;
use crate::tunnel::{self, ClientStream, NameCheck, Opening, Prefixed};

/// Answers an allowed CONNECT whose host the policy decrypts: 200, then decryption
/// in a task.
pub(crate) fn open(
    state: &Arc<ProxyState>,
    client: &ClientContext,
    request: Request<Incoming>,
    who: Identified,
    connect: RequestTarget,
    authority: &Authority,
    port: u16,
) -> Response<ResponseBody> {
    let Identified { snapshot, identity } = who;
    let now = Timestamp::now();
    // Not recorded unless the requests inside never come (see `unserved`).
    let host_decision = snapshot.decide(&identity.subject(), &connect, now);
    let tunnel = Decrypted {
        state: Arc::clone(state),
        client: Arc::new(ClientContext {
            peer: client.peer,
            local: client.local,
            activity: Activity::new(),
            intake: client.intake,
        }),
        check: NameCheck {
            snapshot,
            identity,
            connect,
            now,
            peer: client.peer,
        },
        host_decision,
        connect_host: authority.host().to_owned(),
        port,
        user_agent: tunnel::user_agent(&request),
    };
    state.tasks.spawn(async move {
        match hyper::upgrade::on(request).await {
            Ok(upgraded) => match tunnel::take_apart(upgraded) {
                ClientStream::Tcp(stream, read) => tunnel.run(stream, read).await,
                ClientStream::Other(stream) => tunnel.run(stream, Vec::new()).await,
            },
            Err(error) => debug!(%error, "client left before the decrypted tunnel opened"),
        }
    });
    Response::new(ResponseBody::empty())
}

/// One decrypted tunnel.
struct Decrypted {
    state: Arc<ProxyState>,
    /// The tunnel's requests' view of the client (its own activity clock).
    client: Arc<ClientContext>,
    check: NameCheck,
    /// The CONNECT host as written (IPv6 in brackets).
    connect_host: String,
    port: u16,
    user_agent: Option<String>,
    /// The CONNECT host's own decision.
    host_decision: Decision,
}

impl Decrypted {
    async fn run<C>(self, mut stream: C, mut buf: Vec<u8>)
    where
        C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let Self {
            state,
            client,
            check,
            connect_host,
            port,
            user_agent,
            host_decision,
        } = self;
        // A blocked host whose tunnel ends before any request inside (a device without
        // the school CA fails the handshake) is still a blocked attempt on record.
        let unserved = || {
            host_decision
                .is_blocked()
                .then(|| check.record(&state, &host_decision, user_agent.as_deref(), port))
                .flatten()
        };
        let Some(decrypting) = &state.decryption else {
            return;
        };
        let _open = state.stats.tunnel_opened();
        let hello = match tunnel::read_opening(
            &mut stream,
            &mut buf,
            None,
            state.header_read_timeout,
        )
        .await
        {
            Opening::Hello(hello) => hello,
            Opening::Unreadable(error) => {
                let decision = Decision {
                    verdict: Verdict::Block,
                    categories: Vec::new(),
                    rule: "tls-unreadable".to_owned(),
                    reason: format!("the TLS ClientHello cannot be read: {error}"),
                };
                let _record = check.record(&state, &decision, user_agent.as_deref(), port);
                check.refuse(&mut stream, &decision, None).await;
                return;
            }
            _ => {
                debug!(client = %check.peer, host = connect_host, "no TLS ClientHello in a tunnel to decrypt; closed");
                let _record = unserved();
                return;
            }
        };
        if let Some(decision) = check.refusal(&hello) {
            let _record = check.record(&state, &decision, user_agent.as_deref(), port);
            check
                .refuse(&mut stream, &decision, hello.server_name.as_deref())
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
                return;
            }
        };
        let accept = TlsAcceptor::from(config).accept(Prefixed::new(buf, stream));
        let tls = match tokio::time::timeout(state.header_read_timeout, accept).await {
            Ok(Ok(tls)) => tls,
            Ok(Err(error)) => {
                info!(client = %check.peer, host = name, %error, "TLS handshake with the client failed (is the school CA installed on this device?)");
                let _record = unserved();
                return;
            }
            Err(_) => {
                debug!(client = %check.peer, host = name, "TLS handshake timed out");
                let _record = unserved();
                return;
            }
        };
        let identity = check.identity.clone();
        let service_state = Arc::clone(&state);
        let service = service_fn(move |request: Request<Incoming>| {
            let state = Arc::clone(&service_state);
            let client = Arc::clone(&client);
            let identity: Identity = identity.clone();
            let uri = https_uri(&request, &connect_host, port);
            async move {
                let mut request = request;
                let response = match uri {
                    Some(uri) => {
                        *request.uri_mut() = uri;
                        service::handle_decrypted(state, client, request, identity).await
                    }
                    None => error_page::page(
                        StatusCode::BAD_REQUEST,
                        "bad-host",
                        &request.uri().to_string(),
                        "The request's host is not valid.",
                    ),
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
        let connection = builder.serve_connection_with_upgrades(TokioIo::new(tls), service);
        tokio::select! {
            served = connection => {
                if let Err(error) = served {
                    debug!(%error, host = name, "decrypted connection ended");
                }
            }
            () = state.cut_off.cancelled() => {}
        }
    }
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
