//! The diagnostics listener: `/livez`, `/readyz`, `/metrics` (Prometheus text format).

use std::convert::Infallible;
use std::fmt::Write as _;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

use crate::{Bot, BotError, Result, Status};

/// The Prometheus text exposition of `status`.
pub fn metrics_text(status: &Status) -> String {
    let mut s = String::new();
    let mut metric = |name: &str, kind: &str, help: &str, value: String| {
        let _ = writeln!(s, "# HELP {name} {help}");
        let _ = writeln!(s, "# TYPE {name} {kind}");
        let _ = writeln!(s, "{name} {value}");
    };
    metric(
        "tbot_renewals_total",
        "counter",
        "Successful renewals of the identity and every output.",
        status.renewals.to_string(),
    );
    metric(
        "tbot_renewal_failures_total",
        "counter",
        "Failed renewal attempts.",
        status.failures.to_string(),
    );
    metric(
        "tbot_last_renewal_success",
        "gauge",
        "1 when the last renewal attempt succeeded.",
        u8::from(status.last_ok).to_string(),
    );
    if let Some(v) = status.seconds_until_expiry {
        metric(
            "tbot_certificate_seconds_until_expiry",
            "gauge",
            "Seconds until the earliest output certificate expires.",
            v.to_string(),
        );
    }
    if let Some(v) = status.identity_seconds_until_expiry {
        metric(
            "tbot_identity_seconds_until_expiry",
            "gauge",
            "Seconds until the bot's own identity expires.",
            v.to_string(),
        );
    }
    metric(
        "tbot_identity_unsaved",
        "gauge",
        "1 while the bot holds a renewed identity it could not save to its data directory (identity renewals are paused until it is saved).",
        u8::from(status.identity_unsaved).to_string(),
    );
    metric(
        "tbot_auth_failovers_total",
        "counter",
        "Moves to another auth server of the list after one could not be reached or answered UNAVAILABLE (not failed renewals: a renewal that succeeded after a failover counts in tbot_renewals_total).",
        status.auth_failovers.to_string(),
    );
    metric(
        "tbot_auth_retries_total",
        "counter",
        "Dials and calls to the auth servers made again after a failure that allowed it (see tbot_renewal_failures_total for renewals that failed in the end).",
        status.auth_retries.to_string(),
    );
    metric(
        "tbot_ready",
        "gauge",
        "1 when the outputs hold valid certificates.",
        u8::from(status.ready).to_string(),
    );
    s
}

fn respond(bot: &Bot, path: &str) -> Response<Full<Bytes>> {
    let (code, body, ctype) = match path {
        "/livez" => (StatusCode::OK, "ok\n".to_string(), "text/plain"),
        "/readyz" => match bot.not_ready_reason() {
            None => (StatusCode::OK, "ready\n".to_string(), "text/plain"),
            Some(why) => (
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
                "text/plain",
            ),
        },
        "/metrics" => (
            StatusCode::OK,
            metrics_text(&bot.status()),
            "text/plain; version=0.0.4",
        ),
        _ => (
            StatusCode::NOT_FOUND,
            "not found\n".to_string(),
            "text/plain",
        ),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    if let Ok(v) = http::HeaderValue::from_str(ctype) {
        resp.headers_mut().insert(http::header::CONTENT_TYPE, v);
    }
    resp
}

/// Binds `addr` and serves the diagnostics endpoints for `bot` until the task is dropped.
/// Returns the bound address (useful with port 0) and the serving future.
pub async fn serve_diag(
    bot: Bot,
    addr: &str,
) -> Result<(
    std::net::SocketAddr,
    impl Future<Output = ()> + Send + 'static,
)> {
    let listener = TcpListener::bind(addr).await.map_err(|e| {
        BotError::Config(format!(
            "cannot listen on --diag-addr {addr}: {e}; choose a free host:port"
        ))
    })?;
    let local = listener
        .local_addr()
        .map_err(|e| BotError::Internal(e.to_string()))?;
    tracing::info!(addr = %local, "diagnostics listening (/livez, /readyz, /metrics)");
    let serve = async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let bot = bot.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let resp = respond(&bot, req.uri().path());
                    async move { Ok::<_, Infallible>(resp) }
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
    Ok((local, serve))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn endpoints_before_the_first_renewal() {
        let bot = Bot::builder().auth_server("127.0.0.1:1").build().unwrap();
        assert_eq!(respond(&bot, "/livez").status(), StatusCode::OK);
        assert_eq!(
            respond(&bot, "/readyz").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(respond(&bot, "/metrics").status(), StatusCode::OK);
        assert_eq!(respond(&bot, "/nope").status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn prometheus_text() {
        let t = metrics_text(&Status {
            renewals: 3,
            failures: 1,
            last_ok: true,
            seconds_until_expiry: Some(120),
            identity_seconds_until_expiry: None,
            identity_unsaved: false,
            auth_failovers: 2,
            auth_retries: 5,
            ready: true,
        });
        assert!(
            t.contains("# TYPE tbot_renewals_total counter\ntbot_renewals_total 3\n"),
            "{t}"
        );
        assert!(t.contains("tbot_renewal_failures_total 1\n"), "{t}");
        assert!(
            t.contains("tbot_certificate_seconds_until_expiry 120\n"),
            "{t}"
        );
        assert!(!t.contains("tbot_identity_seconds_until_expiry"), "{t}");
        assert!(
            t.contains("# TYPE tbot_auth_failovers_total counter\ntbot_auth_failovers_total 2\n"),
            "{t}"
        );
        assert!(t.contains("tbot_auth_retries_total 5\n"), "{t}");
    }
}
