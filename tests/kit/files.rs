//! A static file server on 127.0.0.1 (hyper HTTP/1.1): serves the bytes a test put
//! at a path with an ETag (304 to a matching If-None-Match), or with a Last-Modified
//! date instead (304 to that If-Modified-Since), 404 for anything else. Contents can be
//! replaced while it runs; the conditions requests sent are kept.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

/// A file's bytes and, for a file served by date, its Last-Modified.
type Files = Arc<Mutex<HashMap<String, (Bytes, Option<String>)>>>;

/// The `If-None-Match` and `If-Modified-Since` headers of every request, in order
/// (None when absent).
type Conditions = Arc<Mutex<Vec<(Option<String>, Option<String>)>>>;

/// A strong validator for `body`: its length and a simple hash.
fn etag(body: &[u8]) -> String {
    let hash = body.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
    });
    format!("\"{}-{hash:016x}\"", body.len())
}

pub struct FileServer {
    pub addr: SocketAddr,
    files: Files,
    conditions: Conditions,
    task: JoinHandle<()>,
}

impl FileServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let files: Files = Arc::default();
        let conditions: Conditions = Arc::default();
        let shared = Arc::clone(&files);
        let seen = Arc::clone(&conditions);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let files = Arc::clone(&shared);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<_>| {
                        let body = files.lock().unwrap().get(request.uri().path()).cloned();
                        let header = |name| {
                            request.headers().get(name).map(|v: &http::HeaderValue| {
                                v.to_str().unwrap_or_default().to_owned()
                            })
                        };
                        let condition = header(http::header::IF_NONE_MATCH);
                        let since = header(http::header::IF_MODIFIED_SINCE);
                        seen.lock()
                            .unwrap()
                            .push((condition.clone(), since.clone()));
                        async move {
                            let response = match body {
                                Some((_, Some(date))) if since.as_deref() == Some(&date) => {
                                    not_modified()
                                }
                                Some((body, None))
                                    if condition.as_deref() == Some(&etag(&body)) =>
                                {
                                    not_modified()
                                }
                                Some((body, date)) => {
                                    let (name, value) = match date {
                                        Some(date) => (http::header::LAST_MODIFIED, date),
                                        None => (http::header::ETAG, etag(&body)),
                                    };
                                    let mut response = Response::new(Full::new(body));
                                    response.headers_mut().insert(name, value.parse().unwrap());
                                    response
                                }
                                None => {
                                    let mut response =
                                        Response::new(Full::new(Bytes::from_static(b"not here")));
                                    *response.status_mut() = StatusCode::NOT_FOUND;
                                    response
                                }
                            };
                            Ok::<_, Infallible>(response)
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            addr,
            files,
            conditions,
            task,
        }
    }

    /// The `If-None-Match` of every request so far (None: the request had none).
    pub fn conditions(&self) -> Vec<Option<String>> {
        let seen = self.conditions.lock().unwrap();
        seen.iter().map(|(etag, _)| etag.clone()).collect()
    }

    /// The `If-Modified-Since` of every request so far (None: the request had none).
    pub fn modified_since(&self) -> Vec<Option<String>> {
        let seen = self.conditions.lock().unwrap();
        seen.iter().map(|(_, since)| since.clone()).collect()
    }

    /// The ETag this server sends with `body`.
    pub fn etag_of(body: &[u8]) -> String {
        etag(body)
    }

    /// Serves `body` at `path` (e.g. `/blacklists.tar.gz`) from now on.
    pub fn put(&self, path: &str, body: impl Into<Bytes>) {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_owned(), (body.into(), None));
    }

    /// Serves `body` at `path` with `Last-Modified: date` and no ETag from now on.
    pub fn put_dated(&self, path: &str, body: impl Into<Bytes>, date: &str) {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_owned(), (body.into(), Some(date.to_owned())));
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

fn not_modified() -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = StatusCode::NOT_MODIFIED;
    response
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
