//! A static file server on 127.0.0.1 (hyper HTTP/1.1): serves the bytes a test put
//! at a path, 404 for anything else. Contents can be replaced while it runs.

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

type Files = Arc<Mutex<HashMap<String, Bytes>>>;

pub struct FileServer {
    pub addr: SocketAddr,
    files: Files,
    task: JoinHandle<()>,
}

impl FileServer {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let files: Files = Arc::default();
        let shared = Arc::clone(&files);
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let files = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request: http::Request<_>| {
                        let body = files.lock().unwrap().get(request.uri().path()).cloned();
                        async move {
                            let response = match body {
                                Some(body) => Response::new(Full::new(body)),
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
        Self { addr, files, task }
    }

    /// Serves `body` at `path` (e.g. `/blacklists.tar.gz`) from now on.
    pub fn put(&self, path: &str, body: impl Into<Bytes>) {
        self.files
            .lock()
            .unwrap()
            .insert(path.to_owned(), body.into());
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
