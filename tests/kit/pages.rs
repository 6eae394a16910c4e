//! An origin of pages for content-analysis tests: each path serves a page the test
//! registered, with its own headers, split into the chunks the test chose (each
//! written and flushed on its own, so a phrase can straddle two TCP writes), and
//! optionally an endless body. Plain HTTP/1.1 on 127.0.0.1.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http_body_util::StreamBody;
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// One page: headers, body chunks, and whether it goes on for ever after them.
#[derive(Debug, Clone, Default)]
pub struct Page {
    pub headers: Vec<(String, String)>,
    pub chunks: Vec<Vec<u8>>,
    /// After the chunks, the last chunk again and again until the client goes.
    pub endless: bool,
    /// Pause between chunks.
    pub pause: Option<Duration>,
}

impl Page {
    /// An HTML page in one chunk.
    pub fn html(body: &str) -> Self {
        Self {
            headers: vec![("content-type".into(), "text/html; charset=utf-8".into())],
            chunks: vec![body.as_bytes().to_vec()],
            ..Self::default()
        }
    }
}

pub struct PageOrigin {
    pub addr: SocketAddr,
    pages: Arc<Mutex<HashMap<String, Page>>>,
    task: JoinHandle<()>,
}

impl Drop for PageOrigin {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl PageOrigin {
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// The same origin behind TLS (`ca`'s leaf certificate).
    pub async fn start_tls(ca: &super::origin::TestCa) -> Self {
        Self::start_with(Some(ca.acceptor())).await
    }

    async fn start_with(tls: Option<tokio_rustls::TlsAcceptor>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let pages: Arc<Mutex<HashMap<String, Page>>> = Arc::default();
        let served = Arc::clone(&pages);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let pages = Arc::clone(&served);
                let tls = tls.clone();
                tokio::spawn(async move {
                    let service =
                        service_fn(move |request: http::Request<hyper::body::Incoming>| {
                            let page = pages.lock().unwrap().get(request.uri().path()).cloned();
                            async move { Ok::<_, Infallible>(respond(page)) }
                        });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                let _ = builder
                                    .serve_connection(TokioIo::new(stream), service)
                                    .await;
                            }
                        }
                        None => {
                            let _ = builder
                                .serve_connection(TokioIo::new(stream), service)
                                .await;
                        }
                    }
                });
            }
        });
        Self { addr, pages, task }
    }

    /// Serves `page` at `path`.
    pub fn add(&self, path: &str, page: Page) {
        self.pages.lock().unwrap().insert(path.to_owned(), page);
    }
}

type Chunks = futures_util::stream::BoxStream<'static, Result<Frame<Bytes>, Infallible>>;

fn respond(page: Option<Page>) -> Response<StreamBody<Chunks>> {
    use futures_util::StreamExt;
    let Some(page) = page else {
        let empty: Chunks = futures_util::stream::empty().boxed();
        let mut response = Response::new(StreamBody::new(empty));
        *response.status_mut() = http::StatusCode::NOT_FOUND;
        return response;
    };
    let pause = page.pause;
    let last = page.chunks.last().cloned().unwrap_or_default();
    let finite = futures_util::stream::iter(page.chunks.clone());
    let chunks: futures_util::stream::BoxStream<'static, Vec<u8>> = if page.endless {
        finite.chain(futures_util::stream::repeat(last)).boxed()
    } else {
        finite.boxed()
    };
    let frames: Chunks = chunks
        .then(move |chunk| async move {
            match pause {
                Some(pause) => tokio::time::sleep(pause).await,
                // Each chunk its own write: yield so hyper flushes it.
                None => tokio::task::yield_now().await,
            }
            Ok(Frame::data(Bytes::from(chunk)))
        })
        .boxed();
    let mut response = Response::new(StreamBody::new(frames));
    for (name, value) in &page.headers {
        response.headers_mut().insert(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    response
}
