//! Join tokens: add, ls, rm.

use crate::{rows_starting, table};
use machine_id_e2e::AuthServer;

#[test]
fn tokens_add_ls_rm() {
    let auth = AuthServer::start();
    auth.tctl(&["bots", "add", "robot", "--roles=access"])
        .success();
    let out = auth
        .tctl(&["tokens", "add", "--type=bot", "--bot=robot", "--ttl=30m"])
        .success();
    let token = out
        .lines()
        .find_map(|l| l.strip_prefix("The bot token: "))
        .unwrap_or_else(|| panic!("no token:\n{out}"))
        .to_string();
    assert_eq!(token.len(), 32);
    assert!(
        out.contains("This token will expire in 30 minutes."),
        "{out}"
    );
    assert!(out.contains(&format!("   --token={token} \\\n")), "{out}");

    // The store keeps only the hash of a secret token: it is listed by its prefix.
    let shown = format!("sha256:{}", &machine_id_join::token_hash(&token)[..12]);
    let t = table(&auth.tctl(&["tokens", "ls"]).success());
    assert_eq!(t[0], ["Token", "Type", "Bot", "Expiry Time (UTC)"]);
    assert_eq!(t.len(), 3, "two tokens expected: {t:?}");
    let row = &rows_starting(&t, &shown)[0];
    assert_eq!(row[1..3], ["Bot", "robot"]);
    assert!(row[3].ends_with('Z'), "{row:?}");

    let json: serde_json::Value =
        serde_json::from_str(&auth.tctl(&["tokens", "ls", "--format=json"]).success()).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2);

    // Removed by what the listing shows (the secret works as well).
    let out = auth.tctl(&["tokens", "rm", &shown]).success();
    assert!(out.contains("has been deleted"), "{out}");
    let t = table(&auth.tctl(&["tokens", "ls"]).success());
    assert!(rows_starting(&t, &shown).is_empty());
    assert_eq!(t.len(), 2);
}

#[test]
fn tokens_add_checks_its_input() {
    let auth = AuthServer::start();
    let err = auth
        .tctl(&["tokens", "add", "--type=bot", "--bot=ghost"])
        .failure();
    assert!(err.contains("ghost"), "{err}");
    let err = auth
        .tctl(&["tokens", "add", "--type=node", "--bot=ghost"])
        .failure();
    assert!(err.contains("--type=bot"), "{err}");
    let err = auth
        .tctl(&["tokens", "add", "--type=bot", "--bot=ghost", "--ttl=10"])
        .failure();
    assert!(err.contains("duration"), "{err}");
}
