//! Nodes, locks and the audit log.

use crate::{flag_value, rows_starting, table};
use machine_id_e2e::AuthServer;

#[test]
fn nodes_add_ls_and_create_from_yaml() {
    let auth = AuthServer::start();
    let out = auth
        .tctl(&[
            "nodes",
            "add",
            "--name=node-1",
            "--addr=127.0.0.1:2222",
            "--labels=env=dev,team=a",
        ])
        .success();
    assert!(out.contains("node-1"), "{out}");
    let f = auth.scratch().join("node.yaml");
    std::fs::write(
        &f,
        "kind: node\nversion: v2\nmetadata:\n  name: node-2-id\n  labels: {env: prod}\nspec:\n  addr: 10.0.0.2:22\n  hostname: node-2\n",
    )
    .unwrap();
    let out = auth.tctl(&["create", f.to_str().unwrap()]).success();
    assert_eq!(out, "node \"node-2-id\" has been created\n");

    let t = table(&auth.tctl(&["nodes", "ls"]).success());
    assert_eq!(t[0], ["Node Name", "Address", "Labels"]);
    assert_eq!(
        rows_starting(&t, "node-1")[0][1..],
        ["127.0.0.1:2222", "env=dev,team=a"]
    );
    assert_eq!(
        rows_starting(&t, "node-2")[0][1..],
        ["10.0.0.2:22", "env=prod"]
    );

    let json: serde_json::Value =
        serde_json::from_str(&auth.tctl(&["nodes", "ls", "--format=json"]).success()).unwrap();
    let node1 = json
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["spec"]["hostname"] == "node-1")
        .unwrap();
    let id = node1["metadata"]["name"].as_str().unwrap();
    assert_eq!(id.len(), 36, "a uuid: {id}");
    assert_eq!(id.as_bytes()[14], b'4', "uuid v4: {id}");

    assert_eq!(
        auth.tctl(&["get", "nodes"]).success(),
        auth.tctl(&["nodes", "ls"]).success()
    );
    auth.tctl(&["rm", &format!("nodes/{id}")]).success();
    let t = table(&auth.tctl(&["nodes", "ls"]).success());
    assert!(rows_starting(&t, "node-1").is_empty());

    let err = auth
        .tctl(&["nodes", "add", "--name=bad", "--addr=nowhere"])
        .failure();
    assert!(err.contains("host:port"), "{err}");
}

#[test]
fn bot_lock_ls_rm() {
    let auth = AuthServer::start();
    auth.tctl(&["bots", "add", "robot", "--roles=access"])
        .success();
    let out = auth
        .tctl(&["bots", "lock", "robot", "--message=suspicious"])
        .success();
    assert!(out.contains("locked"), "{out}");

    let t = table(&auth.tctl(&["locks", "ls"]).success());
    assert_eq!(t[0], ["ID", "Target", "Message", "Expires"]);
    assert_eq!(t.len(), 2, "{t:?}");
    assert_eq!(t[1][1..], ["user=bot-robot", "suspicious", "never"]);
    let id = t[1][0].clone();

    let bots: serde_json::Value =
        serde_json::from_str(&auth.tctl(&["bots", "ls", "--format=json"]).success()).unwrap();
    assert_eq!(bots[0]["locked"], true);
    let locks: serde_json::Value =
        serde_json::from_str(&auth.tctl(&["locks", "ls", "--format=json"]).success()).unwrap();
    assert_eq!(locks[0]["metadata"]["name"], id.as_str());

    let out = auth.tctl(&["locks", "rm", &id]).success();
    assert!(out.contains("has been deleted"), "{out}");
    let t = table(&auth.tctl(&["locks", "ls"]).success());
    assert_eq!(t.len(), 1, "{t:?}");
    let bots: serde_json::Value =
        serde_json::from_str(&auth.tctl(&["bots", "ls", "--format=json"]).success()).unwrap();
    assert_eq!(bots[0]["locked"], false);
}

#[test]
fn events_record_bot_creation() {
    let auth = AuthServer::start();
    auth.tctl(&["bots", "add", "robot", "--roles=access"])
        .success();
    let out = auth.tctl(&["events", "ls", "--format=json"]).success();
    let events: serde_json::Value = serde_json::from_str(&out).unwrap();
    let create = events
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["event"] == "bot.create")
        .unwrap_or_else(|| panic!("no bot.create in {out}"));
    assert_eq!(create["success"], true);

    let only: serde_json::Value = serde_json::from_str(
        &auth
            .tctl(&["events", "ls", "--type=bot.create", "--format=json"])
            .success(),
    )
    .unwrap();
    let only = only.as_array().unwrap();
    assert_eq!(only.len(), 1, "{only:?}");
    assert_eq!(only[0]["event"], "bot.create");
    let limited: serde_json::Value = serde_json::from_str(
        &auth
            .tctl(&["events", "ls", "--limit", "1", "--format=json"])
            .success(),
    )
    .unwrap();
    assert_eq!(limited.as_array().unwrap().len(), 1);
    let text = auth.tctl(&["events", "ls"]).success();
    assert!(text.contains("bot.create"), "{text}");
}

/// The bot names of `bot.create` rows of `tctl events ls` text output, in order.
fn created_bots(text: &str) -> Vec<String> {
    let rows = table(text.split("\n\n").next().unwrap_or_default());
    rows.iter()
        .skip(1)
        .filter(|r| r[1] == "bot.create")
        .map(|r| {
            r[4].split_whitespace()
                .find(|w| w.starts_with("robot"))
                .unwrap_or_else(|| panic!("no bot named in {r:?}"))
                .trim_matches(|c: char| !c.is_alphanumeric())
                .to_string()
        })
        .collect()
}

/// `tctl events ls` with `--limit`, `--since` and `--until` on a real server: a page holds
/// the newest events, says when older ones match and gives the `--page` that shows them;
/// paging reaches every event once; time windows take durations and RFC 3339 times; json
/// output stays an array with the note on stderr.
#[test]
fn events_ls_pages_with_since_until_and_limit() {
    let auth = AuthServer::start();
    for i in 0..5 {
        auth.tctl(&["bots", "add", &format!("robot{i}"), "--roles=access"])
            .success();
    }
    let first = auth
        .tctl(&["events", "ls", "--type=bot.create", "--limit", "2"])
        .success();
    assert_eq!(created_bots(&first), ["robot3", "robot4"], "{first}");
    assert!(first.contains("Older events match too"), "{first}");
    let page = flag_value(&first, "page").unwrap_or_else(|| panic!("no --page in {first}"));
    let second = auth
        .tctl(&[
            "events",
            "ls",
            "--type=bot.create",
            "--limit",
            "2",
            &format!("--page={page}"),
        ])
        .success();
    assert_eq!(created_bots(&second), ["robot1", "robot2"], "{second}");
    let page = flag_value(&second, "page").unwrap_or_else(|| panic!("no --page in {second}"));
    let last = auth
        .tctl(&[
            "events",
            "ls",
            "--type=bot.create",
            "--limit=2",
            &format!("--page={page}"),
        ])
        .success();
    assert_eq!(created_bots(&last), ["robot0"], "{last}");
    assert!(!last.contains("Older events match"), "{last}");

    // Durations back from now.
    let hour = auth
        .tctl(&["events", "ls", "--type=bot.create", "--since=1h"])
        .success();
    assert_eq!(created_bots(&hour).len(), 5, "{hour}");
    let before_an_hour_ago = auth
        .tctl(&["events", "ls", "--type=bot.create", "--until=1h"])
        .success();
    assert!(
        created_bots(&before_an_hour_ago).is_empty(),
        "{before_an_hour_ago}"
    );

    // RFC 3339 times, from the events themselves (json keeps nanoseconds).
    let json: serde_json::Value = serde_json::from_str(
        &auth
            .tctl(&["events", "ls", "--type=bot.create", "--format=json"])
            .success(),
    )
    .unwrap();
    let times: Vec<&str> = json
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["time"].as_str().unwrap())
        .collect();
    assert_eq!(times.len(), 5);
    let window = auth
        .tctl(&[
            "events",
            "ls",
            "--type=bot.create",
            &format!("--since={}", times[1]),
            &format!("--until={}", times[4]),
        ])
        .success();
    assert_eq!(
        created_bots(&window),
        ["robot1", "robot2", "robot3"],
        "since is inclusive, until exclusive: {window}"
    );

    // json: an array on stdout, the note on stderr.
    let out = auth.tctl(&[
        "events",
        "ls",
        "--type=bot.create",
        "--limit=3",
        "--format=json",
    ]);
    let limited: serde_json::Value = serde_json::from_str(&out.success()).unwrap();
    let names: Vec<&str> = limited
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["fields"]["bot"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(names, ["robot2", "robot3", "robot4"], "{limited}");
    assert!(out.stderr.contains("--page="), "{}", out.stderr);
    assert!(out.stderr.contains("--format=json"), "{}", out.stderr);

    let e = auth
        .tctl(&["events", "ls", "--since=1h", "--until=2h"])
        .failure();
    assert!(
        e.contains("--since") && e.contains("is not before --until"),
        "{e}"
    );
    let usage = auth.tctl(&["events", "ls", "--since=yesterday"]);
    assert_eq!(usage.code, 2, "{}", usage.stderr);
    assert!(usage.stderr.contains("RFC 3339"), "{}", usage.stderr);
}
