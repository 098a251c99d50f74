//! `tctl bench` against the real auth-server: every workload answers without errors or
//! locks, the renewals it counts are exactly the generations the store advanced, the server's
//! costs are read where asked for, a second run reuses the bots; bad flags and an identity
//! without admin rights get clear errors.

use std::collections::BTreeMap;

use machine_id_diag::prometheus::parse;
use machine_id_e2e::guide::{add_bot, free_port, http_get, tbot_start_args};
use machine_id_e2e::{AuthServer, run_tbot, run_tctl};
use serde_json::Value;

/// Runs `tctl bench ARGS --format json` and parses its lines, one object per workload.
fn bench(auth: &AuthServer, args: &[&str]) -> Vec<Value> {
    let mut full = vec!["bench"];
    full.extend_from_slice(args);
    full.extend_from_slice(&["--format", "json"]);
    let out = auth.tctl(&full).success();
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l:?}\n{out}")))
        .collect()
}

fn u(v: &Value, field: &str) -> u64 {
    v[field]
        .as_u64()
        .unwrap_or_else(|| panic!("{field} is not a count: {v}"))
}

fn f(v: &Value, field: &str) -> f64 {
    v[field]
        .as_f64()
        .unwrap_or_else(|| panic!("{field} is not a number: {v}"))
}

/// The generation of each bench bot's user, from `tctl get users`.
fn generations(auth: &AuthServer, prefix: &str) -> BTreeMap<String, u64> {
    let users: Value =
        serde_json::from_str(&auth.tctl(&["get", "users", "--format", "json"]).success()).unwrap();
    users
        .as_array()
        .expect("a list of users")
        .iter()
        .filter(|u| {
            u["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with(&format!("bot-{prefix}-")))
        })
        .map(|u| {
            let g = u["metadata"]["labels"]["generation"]
                .as_str()
                .and_then(|g| g.parse().ok())
                .unwrap_or_else(|| panic!("no generation label: {u}"));
            (u["metadata"]["name"].as_str().unwrap().to_string(), g)
        })
        .collect()
}

#[test]
fn every_workload_runs_clean_and_renewals_match_the_generations() {
    let auth = AuthServer::start();
    let reports = bench(
        &auth,
        &[
            "--bots",
            "4",
            "--concurrency",
            "2",
            "--duration",
            "2s",
            "--workload",
            "all",
        ],
    );
    let names: Vec<&str> = reports
        .iter()
        .map(|r| r["workload"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        ["join", "renew", "cycle", "output", "output-new-conn"]
    );
    for r in &reports {
        assert!(u(r, "requests") > 0, "{r}");
        assert_eq!(u(r, "errors"), 0, "{r}");
        assert_eq!(r["error_kinds"], serde_json::json!({}), "{r}");
        assert_eq!(u(r, "locks"), 0, "{r}");
        assert_eq!(u(r, "bots_dropped"), 0, "{r}");
        assert_eq!((u(r, "bots"), u(r, "concurrency")), (4, 2), "{r}");
        // Rate and percentiles agree with the counts.
        let (secs, n) = (f(r, "seconds"), u(r, "requests") as f64);
        assert!(secs >= 2.0, "{r}");
        assert!((f(r, "requests_per_second") - n / secs).abs() < 1e-6, "{r}");
        assert_eq!(u(r, "count"), u(r, "requests"), "{r}");
        let (p50, p90, p99, max) = (
            f(r, "p50_ms"),
            f(r, "p90_ms"),
            f(r, "p99_ms"),
            f(r, "max_ms"),
        );
        assert!(0.0 < p50 && p50 <= p90 && p90 <= p99 && p99 <= max, "{r}");
        assert!(f(r, "mint_certs_per_second") > 0.0, "{r}");
        // Not asked for: unknown, not zero.
        assert!(r["server_cpu_ms_per_request"].is_null(), "{r}");
        assert!(r["store_commits_per_request"].is_null(), "{r}");
        // A renewal per request for renew and cycle, none for the others.
        let renews = matches!(r["workload"].as_str(), Some("renew" | "cycle"));
        let expected = if renews { u(r, "requests") } else { 0 };
        assert_eq!(u(r, "renewals"), expected, "{r}");
    }
    // The joins ran first and left every bot at generation 1; each renewal since moved its
    // bot's generation by exactly one.
    let renewals: u64 = reports.iter().map(|r| u(r, "renewals")).sum();
    let gens = generations(&auth, "bench");
    assert_eq!(gens.len(), 4, "{gens:?}");
    let advanced: u64 = gens.values().map(|g| g - 1).sum();
    assert_eq!(advanced, renewals, "{gens:?}");
    let locks = auth.tctl(&["locks", "ls", "--format", "json"]).success();
    assert_eq!(
        serde_json::from_str::<Value>(&locks).unwrap(),
        serde_json::json!([])
    );

    // A second run with the same prefix reuses the bots (joined again: generation 1), and
    // reads the server's CPU time and metrics when told where.
    let before = gens;
    let diag = format!("127.0.0.1:{}", free_port());
    let auth = {
        drop(auth);
        AuthServer::start_with_args("example.com", &["--diag-addr", &diag])
    };
    let pid = auth.pid().expect("running").to_string();
    let args = [
        "--bots",
        "4",
        "--concurrency",
        "2",
        "--duration",
        "1s",
        "--workload",
        "renew",
        "--server-pid",
        &pid,
        "--diag-addr",
        &diag,
    ];
    bench(&auth, &args); // creates the bots on this new server
    let gens_first = generations(&auth, "bench");
    let reports = bench(&auth, &args); // reuses them
    assert_eq!(reports.len(), 1);
    let r = &reports[0];
    assert_eq!((u(r, "errors"), u(r, "locks")), (0, 0), "{r}");
    assert!(f(r, "server_cpu_ms_per_request") > 0.0, "{r}");
    let gens = generations(&auth, "bench");
    assert_eq!(
        gens.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    // Joined again (generation 1), then renewed: the advance is this run's renewals only,
    // whatever the first run left.
    assert!(gens_first.values().sum::<u64>() > 4, "{gens_first:?}");
    assert_eq!(gens.values().map(|g| g - 1).sum::<u64>(), u(r, "renewals"));
    // Commits per request are given exactly when the server exports the counter.
    let (code, page) = http_get(&diag, "/metrics");
    assert_eq!(code, 200, "{page}");
    let body = page.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    let exported = parse(body)
        .unwrap()
        .family(machine_id_bench::STORE_COMMITS_METRIC)
        .is_some();
    if exported {
        assert!(f(r, "store_commits_per_request") > 0.0, "{r}");
    } else {
        assert!(r["store_commits_per_request"].is_null(), "{r}");
    }
}

#[test]
fn bad_numbers_are_refused_before_connecting() {
    // Nothing listens on the address: the flags are judged first.
    let port = free_port().to_string();
    let addr = format!("127.0.0.1:{port}");
    let run = |args: &[&str]| {
        let mut full = vec![
            "--auth-server",
            &addr,
            "--identity",
            "/nonexistent",
            "bench",
        ];
        full.extend_from_slice(args);
        run_tctl(&full).failure()
    };
    let err = run(&["--bots", "2", "--concurrency", "4"]);
    assert!(
        err.contains("--concurrency 4 is more than --bots 2"),
        "{err}"
    );
    assert!(
        err.contains("raise --bots to at least 4 or lower --concurrency"),
        "{err}"
    );
    let err = run(&["--duration", "0s"]);
    assert!(err.contains("--duration must be more than zero"), "{err}");
    let err = run(&["--duration", "soon"]);
    assert!(err.contains("--duration \"soon\""), "{err}");
}

#[test]
fn an_identity_without_admin_rights_is_told_to_use_the_admin_one() {
    let auth = AuthServer::start();
    // A bot's output identity (roles: access) may not manage bots.
    let join = add_bot(&auth, "robot", "access");
    let scratch = auth.scratch();
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    let mut args = tbot_start_args(&auth, &join, &data, &dest);
    args.push("--oneshot".into());
    run_tbot(&args, &[]).success();
    let err = run_tctl(&[
        "--auth-server",
        &auth.addr,
        "--identity",
        dest.to_str().unwrap(),
        "bench",
        "--bots",
        "2",
        "--concurrency",
        "1",
        "--duration",
        "1s",
    ])
    .failure();
    assert!(err.contains("may not manage bots"), "{err}");
    assert!(err.contains("--identity DATA_DIR/admin"), "{err}");
    // Nothing was created.
    let bots = auth.tctl(&["bots", "ls", "--format", "json"]).success();
    assert!(!bots.contains("bench-"), "{bots}");
}
