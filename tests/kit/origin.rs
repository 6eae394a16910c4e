//! A real origin server (hyper HTTP/1.1 on 127.0.0.1, optionally behind rustls) with
//! routes that exercise what a proxy must get right: sized and chunked bodies, echo
//! of method, headers and body, streaming in both directions gated by the test,
//! a silent route for timeouts, and a WebSocket echo.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::protocol::Role;

use super::payload;

type Body = BoxBody<Bytes, hyper::Error>;

/// Test certificate authority and a leaf for `localhost` / `127.0.0.1`.
pub struct TestCa {
    pub ca_pem: String,
    chain: Vec<rustls::pki_types::CertificateDer<'static>>,
    key_der: Vec<u8>,
}

impl TestCa {
    pub fn new() -> Self {
        Self::for_names(&["localhost", "127.0.0.1"])
    }

    /// A CA whose leaf certificate is valid for `names` (host names or IP addresses).
    pub fn for_names(names: &[&str]) -> Self {
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "SafeGate test origin CA");
        let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf_params = rcgen::CertificateParams::new(
            names
                .iter()
                .map(|name| (*name).to_owned())
                .collect::<Vec<_>>(),
        )
        .unwrap();
        let leaf = leaf_params.signed_by(&leaf_key, &ca).unwrap();
        Self {
            ca_pem: ca.pem(),
            chain: vec![leaf.der().clone(), ca.der().clone()],
            key_der: leaf_key.serialize_der(),
        }
    }

    pub fn acceptor(&self) -> TlsAcceptor {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                self.chain.clone(),
                rustls::pki_types::PrivateKeyDer::Pkcs8(self.key_der.clone().into()),
            )
            .unwrap();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        TlsAcceptor::from(Arc::new(config))
    }
}

/// Shared between the origin's connections and the test.
#[derive(Default)]
pub struct OriginState {
    /// TCP connections accepted so far.
    pub connections: AtomicUsize,
    /// `/gated` sends its second half only after this is notified.
    pub gate: Notify,
    /// Notified when `/upload-gated` has received the first part of a request body.
    pub first_chunk_seen: Notify,
    /// Notified when `/gated` has sent its first half.
    pub first_half_sent: Notify,
    /// `METHOD path` of every request received, in order.
    pub requests: std::sync::Mutex<Vec<String>>,
}

pub struct Origin {
    pub addr: SocketAddr,
    pub state: Arc<OriginState>,
    task: JoinHandle<()>,
}

impl Origin {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    pub async fn start_tls(ca: &TestCa) -> Self {
        Self::start_with(Some(ca.acceptor())).await
    }

    /// A plain origin on `addr` (e.g. `[::1]:0`); fails if the address cannot be bound.
    pub async fn start_at(addr: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self::serve(listener, None))
    }

    /// A TLS origin on `addr` (e.g. `127.0.0.5:443`); fails if it cannot be bound.
    pub async fn start_tls_at(ca: &TestCa, addr: &str) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        Ok(Self::serve(listener, Some(ca.acceptor())))
    }

    async fn start_with(tls: Option<TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        Self::serve(listener, tls)
    }

    fn serve(listener: TcpListener, tls: Option<TlsAcceptor>) -> Self {
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(OriginState::default());
        let accept_state = Arc::clone(&state);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                accept_state.connections.fetch_add(1, Ordering::SeqCst);
                let state = Arc::clone(&accept_state);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        let state = Arc::clone(&state);
                        async move { Ok::<_, Infallible>(route(state, request).await) }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            let Ok(stream) = acceptor.accept(stream).await else {
                                return;
                            };
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades()
                                .await;
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .with_upgrades()
                                .await;
                        }
                    }
                });
            }
        });
        Self { addr, state, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub fn tls_url(&self, path: &str) -> String {
        format!("https://localhost:{}{}", self.addr.port(), path)
    }

    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// `METHOD path` of every request received so far.
    pub fn requests(&self) -> Vec<String> {
        self.state.requests.lock().unwrap().clone()
    }
}

impl Drop for Origin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed()
}

fn respond(status: StatusCode, body: Body) -> Response<Body> {
    let mut response = Response::new(body);
    *response.status_mut() = status;
    response
}

fn chunks(parts: Vec<Bytes>) -> Body {
    let stream = futures_util::stream::iter(
        parts
            .into_iter()
            .map(|b| Ok::<_, hyper::Error>(Frame::data(b))),
    );
    BodyExt::boxed(StreamBody::new(stream))
}

async fn route(state: Arc<OriginState>, mut request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_owned();
    state
        .requests
        .lock()
        .unwrap()
        .push(format!("{} {path}", request.method()));
    let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    match segments.as_slice() {
        ["bytes", n] => {
            let n: usize = n.parse().unwrap_or(0);
            respond(StatusCode::OK, full(payload(n)))
        }
        ["chunked", n] => {
            let n: usize = n.parse().unwrap_or(0);
            let data = Bytes::from(payload(n));
            let parts = (0..data.len())
                .step_by(16 * 1024)
                .map(|i| data.slice(i..(i + 16 * 1024).min(data.len())))
                .collect();
            respond(StatusCode::OK, chunks(parts))
        }
        ["uri"] => respond(StatusCode::OK, full(request.uri().to_string())),
        ["download", name] => {
            // A download whose type and file name only the response reveals.
            let mut response = respond(StatusCode::OK, full(payload(2048)));
            let headers = response.headers_mut();
            headers.insert("content-type", "application/x-msdownload".parse().unwrap());
            headers.insert(
                "content-disposition",
                format!("attachment; filename=\"{name}\"").parse().unwrap(),
            );
            response
        }
        ["status", code] => {
            let code = code
                .parse()
                .ok()
                .and_then(|c| StatusCode::from_u16(c).ok())
                .unwrap_or(StatusCode::OK);
            respond(code, full(format!("status {code}")))
        }
        ["echo"] => {
            let mut response = respond(StatusCode::OK, request.into_body().boxed());
            response
                .headers_mut()
                .insert("x-echo", "1".parse().unwrap());
            response
        }
        ["method"] => {
            let method = request.method().to_string();
            let body = request
                .into_body()
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            respond(StatusCode::OK, full(format!("{method} {}", body.len())))
        }
        ["headers"] => {
            let mut text = String::new();
            for (name, value) in request.headers() {
                text.push_str(&format!("{}: {}\n", name, value.to_str().unwrap_or("?")));
            }
            let mut response = respond(StatusCode::OK, full(text));
            let headers = response.headers_mut();
            headers.insert("connection", "x-origin-hop".parse().unwrap());
            headers.insert("x-origin-hop", "secret".parse().unwrap());
            headers.insert("keep-alive", "timeout=5".parse().unwrap());
            headers.insert(
                "proxy-authenticate",
                "Basic realm=\"origin\"".parse().unwrap(),
            );
            headers.insert("x-end-to-end", "kept".parse().unwrap());
            response
        }
        ["gated"] => {
            let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(2);
            tokio::spawn(async move {
                let _ = tx.send(Bytes::from_static(b"first half;")).await;
                state.first_half_sent.notify_one();
                state.gate.notified().await;
                let _ = tx.send(Bytes::from_static(b"second half")).await;
            });
            let stream = futures_util::stream::unfold(rx, |mut rx| async move {
                rx.recv()
                    .await
                    .map(|b| (Ok::<_, hyper::Error>(Frame::data(b)), rx))
            });
            respond(StatusCode::OK, BodyExt::boxed(StreamBody::new(stream)))
        }
        ["upload-gated"] => {
            let mut body = request.into_body();
            let mut total = 0usize;
            let mut announced = false;
            while let Some(frame) = body.frame().await {
                let Ok(frame) = frame else { break };
                if let Some(data) = frame.data_ref() {
                    total += data.len();
                    if !announced && total > 0 {
                        announced = true;
                        state.first_chunk_seen.notify_one();
                    }
                }
            }
            respond(StatusCode::OK, full(format!("received {total}")))
        }
        ["silent"] => {
            std::future::pending::<()>().await;
            unreachable!()
        }
        ["ws"] => {
            let Some(key) = request.headers().get("sec-websocket-key").cloned() else {
                return respond(StatusCode::BAD_REQUEST, full("not a websocket request"));
            };
            let upgrade = hyper::upgrade::on(&mut request);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut socket =
                    WebSocketStream::from_raw_socket(TokioIo::new(upgraded), Role::Server, None)
                        .await;
                while let Some(Ok(message)) = socket.next().await {
                    if message.is_close() {
                        break;
                    }
                    if socket.send(message).await.is_err() {
                        break;
                    }
                }
            });
            let accept =
                tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
            let mut response = respond(StatusCode::SWITCHING_PROTOCOLS, full(Bytes::new()));
            let headers = response.headers_mut();
            headers.insert("connection", "upgrade".parse().unwrap());
            headers.insert("upgrade", "websocket".parse().unwrap());
            headers.insert("sec-websocket-accept", accept.parse().unwrap());
            response
        }
        _ => respond(StatusCode::NOT_FOUND, full("no such route")),
    }
}
