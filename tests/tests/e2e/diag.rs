//! `auth-server start --diag-addr`: `/healthz`, `/readyz` and `/metrics` of the real binary,
//! driven by the real `tctl` and `tbot`; `/readyz` turns 503 while another process holds the
//! SQLite store's locks (so the server's reads cannot proceed) and 200 again once it lets go.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::fd::AsFd;

use machine_id_diag::prometheus::{Scrape, parse};
use machine_id_e2e::guide::{HANG, add_bot, free_port, http_get, tbot_start_args, wait_until};
use machine_id_e2e::{AuthServer, run_tbot};

fn body(response: &str) -> &str {
    response.split_once("\r\n\r\n").map_or("", |(_, b)| b)
}

fn scrape(diag: &str) -> Scrape {
    let (code, response) = http_get(diag, "/metrics");
    assert_eq!(code, 200, "{response}");
    parse(body(&response)).unwrap_or_else(|e| panic!("not Prometheus text: {e}\n{response}"))
}

/// `labels -> value` of every sample of `family`.
fn samples(s: &Scrape, family: &str) -> BTreeMap<String, f64> {
    s.family(family)
        .unwrap_or_else(|| panic!("no family {family}"))
        .samples
        .iter()
        .map(|x| {
            let mut l: Vec<String> = x.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            l.sort();
            (l.join(","), x.value)
        })
        .collect()
}

/// An exclusive POSIX lock, from this process, on the byte range SQLite uses for its WAL
/// locks in the store's `-shm` file (write, checkpoint, recover and every reader slot), as
/// a stuck process holding them would; released when the file is closed.
fn hold_wal_locks(shm: &std::path::Path) -> File {
    use nix::fcntl::{FcntlArg, fcntl};
    let f = File::options()
        .read(true)
        .write(true)
        .open(shm)
        .expect("open -shm");
    let lock = nix::libc::flock {
        l_type: nix::libc::F_WRLCK as i16,
        l_whence: nix::libc::SEEK_SET as i16,
        l_start: 120,
        l_len: 8,
        l_pid: 0,
    };
    fcntl(f.as_fd(), FcntlArg::F_SETLK(&lock)).expect("lock the WAL lock bytes");
    f
}

#[test]
fn diag_endpoints_of_the_real_binary() {
    let diag = format!("127.0.0.1:{}", free_port());
    let auth = AuthServer::start_with_args("example.com", &["--diag-addr", &diag]);
    let (code, response) = http_get(&diag, "/healthz");
    assert_eq!((code, body(&response)), (200, "ok\n"), "{response}");
    let (code, response) = http_get(&diag, "/readyz");
    assert_eq!((code, body(&response)), (200, "ready\n"), "{response}");
    let before = scrape(&diag);

    // A join and a renewal with tbot, and a join refused (the token is used up).
    let join = add_bot(&auth, "robot", "access");
    let scratch = auth.scratch();
    let (data, dest) = (scratch.join("bot-data"), scratch.join("dest"));
    let mut args = tbot_start_args(&auth, &join, &data, &dest);
    args.push("--oneshot".into());
    run_tbot(&args, &[]).success();
    run_tbot(&args, &[]).success();
    let mut again = tbot_start_args(
        &auth,
        &join,
        &scratch.join("data-2"),
        &scratch.join("dest-2"),
    );
    again.push("--oneshot".into());
    let refused = run_tbot(&again, &[]).failure();
    assert!(refused.contains("token"), "{refused}");

    let after = scrape(&diag);
    let joins = samples(&after, "auth_server_joins_total");
    assert_eq!(joins["method=token,result=ok"], 1.0, "{joins:?}");
    assert_eq!(joins["method=token,result=denied"], 1.0, "{joins:?}");
    assert_eq!(joins.values().sum::<f64>(), 2.0, "{joins:?}");
    let renewals = samples(&after, "auth_server_renewals_total");
    assert_eq!(renewals["result=ok"], 1.0, "{renewals:?}");
    assert_eq!(renewals.values().sum::<f64>(), 1.0, "{renewals:?}");
    let refusals = samples(&after, "auth_server_refusals_total");
    assert_eq!(refusals["reason=permission_denied"], 1.0, "{refusals:?}");
    assert_eq!(refusals.values().sum::<f64>(), 1.0, "{refusals:?}");
    let requests = samples(&after, "auth_server_grpc_requests_total");
    assert_eq!(
        requests["code=OK,method=RegisterUsingToken,service=JoinService"], 1.0,
        "{requests:?}"
    );
    assert_eq!(
        requests["code=PermissionDenied,method=RegisterUsingToken,service=JoinService"], 1.0,
        "{requests:?}"
    );
    assert_eq!(
        requests["code=OK,method=CreateBot,service=AuthService"], 1.0,
        "{requests:?}"
    );
    let store_gets = |s: &Scrape| {
        s.value(
            "auth_server_store_operation_duration_seconds_count",
            &[("op", "get")],
        )
        .expect("store get timings")
    };
    assert!(store_gets(&after) > store_gets(&before));

    // Another process holds the store's WAL locks: the server cannot read, /readyz says so.
    let held = hold_wal_locks(&auth.data_dir().join("backend.db-shm"));
    let (code, response) = http_get(&diag, "/readyz");
    assert_eq!(code, 503, "{response}");
    let line = body(&response);
    assert!(line.starts_with("not ready: store: "), "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    eprintln!("/readyz while the store is locked: {line}");
    assert_eq!(http_get(&diag, "/healthz").0, 200);
    drop(held);
    wait_until(HANG, "/readyz to answer 200 again", || {
        http_get(&diag, "/readyz").0 == 200
    });
}
