//! The tiny HTTP/1 server behind the diagnostics endpoints: binds an address, answers each
//! `GET` (or `HEAD`) with what the [`Handler`] returns for the path, and stops, with every
//! open connection, when its future is dropped.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// The diagnostics listener could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DiagError {
    /// The address could not be bound (in use, not local, not `host:port`).
    #[error("cannot listen on {addr}: {cause}; choose a free host:port")]
    Bind {
        /// The address asked for.
        addr: String,
        /// The cause (in the message, not an error source, so it is printed once).
        cause: std::io::Error,
    },
}

/// What an endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The HTTP status code.
    pub status: u16,
    /// The `Content-Type`.
    pub content_type: &'static str,
    /// The body.
    pub body: String,
}

impl Reply {
    /// A `text/plain` reply.
    pub fn text(status: u16, body: impl Into<String>) -> Self {
        Self {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// A `200` reply in the Prometheus text format.
    pub fn metrics(body: String) -> Self {
        Self {
            status: 200,
            content_type: crate::prometheus::CONTENT_TYPE,
            body,
        }
    }

    /// `404 not found`.
    pub fn not_found() -> Self {
        Self::text(404, "not found\n")
    }
}

/// Answers a path. Cloned into every connection.
pub trait Handler: Clone + Send + Sync + 'static {
    /// The reply for a `GET` of `path` (the query string is left out).
    fn respond(&self, path: &str) -> impl Future<Output = Reply> + Send;
}

/// Binds `addr` (`host:port`; port 0 picks a free one) and returns the bound address and the
/// future that serves `handler` on it. Nothing is served until the future is polled; dropping
/// it closes the listener and every connection it opened.
///
/// # Errors
///
/// [`DiagError::Bind`] when the address cannot be bound.
pub async fn serve<H: Handler>(
    addr: &str,
    handler: H,
) -> Result<(SocketAddr, impl Future<Output = ()> + Send + 'static), DiagError> {
    let bind_err = |cause| DiagError::Bind {
        addr: addr.to_string(),
        cause,
    };
    let listener = TcpListener::bind(addr).await.map_err(bind_err)?;
    let local = listener.local_addr().map_err(bind_err)?;
    let serving = async move {
        // Dropping the set (with the future) aborts every connection.
        let mut connections = JoinSet::new();
        loop {
            let accepted = tokio::select! {
                a = listener.accept() => a,
                // Reaps finished connections so the set does not grow.
                Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            };
            let stream = match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    tracing::debug!(error = %e, "diagnostics accept failed");
                    // Typically out of file descriptors: back off instead of spinning.
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let handler = handler.clone();
            connections.spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let handler = handler.clone();
                    async move { Ok::<_, Infallible>(answer(&handler, &req).await) }
                });
                if let Err(e) = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await
                {
                    tracing::debug!(error = %e, "diagnostics connection failed");
                }
            });
        }
    };
    Ok((local, serving))
}

/// The response to one request.
async fn answer<H: Handler, B>(handler: &H, req: &Request<B>) -> Response<Full<Bytes>> {
    let readable = req.method() == Method::GET || req.method() == Method::HEAD;
    let reply = if readable {
        handler.respond(req.uri().path()).await
    } else {
        Reply::text(405, "only GET and HEAD are served\n")
    };
    let mut resp = Response::new(Full::new(Bytes::from(reply.body)));
    *resp.status_mut() =
        StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let headers = resp.headers_mut();
    headers.insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(reply.content_type),
    );
    if !readable {
        headers.insert(
            http::header::ALLOW,
            http::HeaderValue::from_static("GET, HEAD"),
        );
    }
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    #[derive(Clone)]
    struct Echo;

    impl Handler for Echo {
        async fn respond(&self, path: &str) -> Reply {
            match path {
                "/healthz" => Reply::text(200, "ok\n"),
                "/readyz" => Reply::text(503, "not ready: testing\n"),
                _ => Reply::not_found(),
            }
        }
    }

    async fn request(addr: SocketAddr, method: &str, path: &str) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!("{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).await.unwrap();
        out
    }

    #[tokio::test]
    async fn answers_over_real_http_and_stops_when_dropped() {
        let (addr, serving) = serve("127.0.0.1:0", Echo).await.unwrap();
        let task = tokio::spawn(serving);
        let ok = request(addr, "GET", "/healthz?verbose=1").await;
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(ok.ends_with("\r\n\r\nok\n"), "{ok}");
        let down = request(addr, "GET", "/readyz").await;
        assert!(down.starts_with("HTTP/1.1 503"), "{down}");
        assert!(down.ends_with("not ready: testing\n"), "{down}");
        assert!(
            request(addr, "GET", "/nope")
                .await
                .starts_with("HTTP/1.1 404")
        );
        let post = request(addr, "POST", "/healthz").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
        assert!(
            post.to_ascii_lowercase().contains("allow: get, head"),
            "{post}"
        );

        task.abort();
        let _ = task.await;
        assert!(
            tokio::net::TcpStream::connect(addr).await.is_err(),
            "still listening"
        );
    }

    #[tokio::test]
    async fn a_taken_address_is_a_clear_error() {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = held.local_addr().unwrap().to_string();
        let Err(e) = serve(&addr, Echo).await else {
            panic!("bound a taken address");
        };
        let msg = e.to_string();
        assert!(
            msg.starts_with(&format!("cannot listen on {addr}: ")),
            "{msg}"
        );
        assert!(msg.ends_with("; choose a free host:port"), "{msg}");
    }
}
