//! `tctl` and `tsh` with several auth servers: repeated or comma-separated `--auth-server`
//! (and `TELEPORT_AUTH_SERVER`) skip a dead first address; all dead names each.

use machine_id_e2e::guide::free_port;
use machine_id_e2e::{AuthServer, run_tctl, run_tsh};

#[test]
fn tctl_and_tsh_skip_a_dead_first_auth_server() {
    let auth = AuthServer::start();
    let identity = auth.identity_dir();
    let identity = identity.to_str().unwrap();
    let dead = format!("127.0.0.1:{}", free_port());

    // Repeated flags, one before and one after the command.
    let out = run_tctl(&[
        "--auth-server",
        &dead,
        "--identity",
        identity,
        "status",
        "--auth-server",
        &auth.addr,
    ])
    .success();
    assert!(out.contains("Cluster:         example.com"), "{out}");
    assert!(
        out.contains(&format!("Auth server:     {}", auth.addr)),
        "{out}"
    );
    // A comma-separated list.
    let list = format!("{dead},{}", auth.addr);
    let out = run_tctl(&[
        "--auth-server",
        &list,
        "--identity",
        identity,
        "get",
        "roles",
    ])
    .success();
    assert!(out.contains("access"), "{out}");

    // tsh through the list, with a bot's destination as identity.
    auth.tctl(&["nodes", "add", "--name=n1", "--addr=127.0.0.1:22"])
        .success();
    let out = run_tsh(&["--proxy", &list, "-i", identity, "ls"]).success();
    assert!(out.contains("n1"), "{out}");

    // Every address dead: one line naming each.
    let other = format!("127.0.0.1:{}", free_port());
    let e = run_tctl(&[
        "--auth-server",
        &format!("{dead},{other}"),
        "--identity",
        identity,
        "status",
    ])
    .failure();
    assert!(e.contains("cannot reach any of the auth servers"), "{e}");
    assert!(
        e.contains(&format!("{dead}: ")) && e.contains(&format!("{other}: ")),
        "{e}"
    );
    let e = run_tsh(&["--auth-server", &format!("{dead},"), "-i", identity, "ls"]).failure();
    assert!(e.contains("remove the extra comma"), "{e}");
}
