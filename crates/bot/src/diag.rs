//! The diagnostics listener: `/livez`, `/readyz`, `/metrics` (Prometheus text format), over
//! the HTTP server and exposition writer of `machine_id_diag`, which the auth server shares.

use machine_id_diag::prometheus::{Exposition, Kind};
use machine_id_diag::{Handler, Reply};

use crate::{Bot, BotError, Result, Status};

/// The Prometheus text exposition of `status`.
pub fn metrics_text(status: &Status) -> String {
    let mut e = Exposition::new();
    e.single(
        "tbot_renewals_total",
        Kind::Counter,
        "Successful renewals of the identity and every output.",
        status.renewals,
    );
    e.single(
        "tbot_renewal_failures_total",
        Kind::Counter,
        "Failed renewal attempts.",
        status.failures,
    );
    e.single(
        "tbot_last_renewal_success",
        Kind::Gauge,
        "1 when the last renewal attempt succeeded.",
        u8::from(status.last_ok),
    );
    if let Some(v) = status.seconds_until_expiry {
        e.single(
            "tbot_certificate_seconds_until_expiry",
            Kind::Gauge,
            "Seconds until the earliest output certificate expires.",
            v,
        );
    }
    if let Some(v) = status.identity_seconds_until_expiry {
        e.single(
            "tbot_identity_seconds_until_expiry",
            Kind::Gauge,
            "Seconds until the bot's own identity expires.",
            v,
        );
    }
    e.single(
        "tbot_identity_unsaved",
        Kind::Gauge,
        "1 while the bot holds a renewed identity it could not save to its data directory (identity renewals are paused until it is saved).",
        u8::from(status.identity_unsaved),
    );
    e.single(
        "tbot_auth_failovers_total",
        Kind::Counter,
        "Moves to another auth server of the list after one could not be reached or answered UNAVAILABLE (not failed renewals: a renewal that succeeded after a failover counts in tbot_renewals_total).",
        status.auth_failovers,
    );
    e.single(
        "tbot_auth_retries_total",
        Kind::Counter,
        "Dials and calls to the auth servers made again after a failure that allowed it (see tbot_renewal_failures_total for renewals that failed in the end).",
        status.auth_retries,
    );
    e.single(
        "tbot_ca_rotation_renewals_total",
        Kind::Counter,
        "Renewals of the identity and every output asked for because a CA rotation changed what the bot must hold.",
        status.ca_rotation_renewals,
    );
    if let Some(up) = status.ca_watch_up {
        e.single(
            "tbot_ca_watch_up",
            Kind::Gauge,
            "1 while the watch on the cluster's CAs is open, 0 while it is reconnecting.",
            u8::from(up),
        );
    }
    e.single(
        "tbot_ready",
        Kind::Gauge,
        "1 when the outputs hold valid certificates.",
        u8::from(status.ready),
    );
    e.finish()
}

fn respond(bot: &Bot, path: &str) -> Reply {
    match path {
        "/livez" => Reply::text(200, "ok\n"),
        "/readyz" => {
            // The CA watch is shown, never judged: a watch that reconnects leaves renewals
            // on the schedule working.
            let watch = bot
                .ca_watch_line()
                .map(|l| format!("{l}\n"))
                .unwrap_or_default();
            match bot.not_ready_reason() {
                None => Reply::text(200, format!("ready\n{watch}")),
                Some(why) => Reply::text(503, format!("not ready: {why}\n{watch}")),
            }
        }
        "/metrics" => Reply::metrics(metrics_text(&bot.status())),
        _ => Reply::not_found(),
    }
}

impl Handler for Bot {
    async fn respond(&self, path: &str) -> Reply {
        respond(self, path)
    }
}

/// Binds `addr` and serves the diagnostics endpoints for `bot` until the returned future is
/// dropped. Returns the bound address (useful with port 0) and the serving future.
pub async fn serve_diag(
    bot: Bot,
    addr: &str,
) -> Result<(
    std::net::SocketAddr,
    impl Future<Output = ()> + Send + 'static,
)> {
    let (local, serving) = machine_id_diag::serve(addr, bot)
        .await
        .map_err(|e| BotError::Config(format!("--diag-addr: {e}")))?;
    tracing::info!(addr = %local, "diagnostics listening (/livez, /readyz, /metrics)");
    Ok((local, serving))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn endpoints_before_the_first_renewal() {
        let bot = Bot::builder().auth_server("127.0.0.1:1").build().unwrap();
        assert_eq!(respond(&bot, "/livez").status, 200);
        assert_eq!(respond(&bot, "/readyz").status, 503);
        assert_eq!(respond(&bot, "/metrics").status, 200);
        assert_eq!(respond(&bot, "/nope").status, 404);
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
            ca_rotation_renewals: 4,
            ca_watch_up: Some(false),
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
        machine_id_diag::prometheus::parse(&t).unwrap();
        assert!(
            t.contains("# TYPE tbot_auth_failovers_total counter\ntbot_auth_failovers_total 2\n"),
            "{t}"
        );
        assert!(t.contains("tbot_auth_retries_total 5\n"), "{t}");
        assert!(
            t.contains("# TYPE tbot_ca_rotation_renewals_total counter\ntbot_ca_rotation_renewals_total 4\n"),
            "{t}"
        );
        assert!(t.contains("tbot_ca_watch_up 0\n"), "{t}");
    }
}
