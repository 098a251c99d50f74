//! `tbot` with several auth servers: a dead first address is skipped by the join, the
//! renewal and the outputs, the generated ssh_config carries the whole list, and when every
//! address is dead the one error line names each.

use machine_id_e2e::{AuthServer, run_tbot};

use crate::{EIGHT, add_bot, free_port, generation, start_args, tls_identity};

/// `start_args` with `--auth-server` replaced by `servers` (each its own flag).
fn with_servers(mut args: Vec<String>, servers: &[&str]) -> Vec<String> {
    let at = args.iter().position(|a| a == "--auth-server").unwrap();
    args.drain(at..at + 2);
    for s in servers {
        args.extend(["--auth-server".to_string(), s.to_string()]);
    }
    args
}

#[test]
fn oneshot_with_a_dead_first_auth_server_writes_its_outputs() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let join = add_bot(&auth, "robot", "access");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    let dead = free_port();

    // The join: a comma-separated list, dead address first.
    let list = format!("{dead},{}", auth.addr);
    let mut args = with_servers(start_args(&auth, &join, &data, &dest), &[&list]);
    args.push("--oneshot".into());
    run_tbot(&args, &[]).success();
    for f in EIGHT {
        assert!(dest.join(f).is_file(), "{f} missing");
    }
    assert_eq!(generation(&data), 1);
    assert_eq!(
        tls_identity(&dest).impersonator.as_deref(),
        Some("bot-robot")
    );
    // The proxy shares the auth port, so ssh_config's ProxyCommand gets the whole list.
    let ssh_config = std::fs::read_to_string(dest.join("ssh_config")).unwrap();
    assert!(
        ssh_config.contains(&format!(" --proxy={list} ssh ")),
        "{ssh_config}"
    );

    // A renewal: repeated flags.
    let mut args = with_servers(start_args(&auth, &join, &data, &dest), &[&dead, &auth.addr]);
    args.push("--oneshot".into());
    run_tbot(&args, &[]).success();
    assert_eq!(generation(&data), 2);

    // Another: `auth_servers:` in the config file.
    let config = scratch.join("tbot.yaml");
    std::fs::write(
        &config,
        format!(
            "auth_servers: [{dead}, {}]\nonboarding:\n  token: {}\n  ca_pins: [{}]\nstorage:\n  directory: {}\ndestinations:\n  - directory: {}\noneshot: true\n",
            auth.addr,
            join.token,
            join.pin,
            data.display(),
            dest.display()
        ),
    )
    .unwrap();
    run_tbot(&["start", "-c", config.to_str().unwrap()], &[]).success();
    assert_eq!(generation(&data), 3);
    // And the environment variable, with a list.
    let args = [
        "start",
        "--data-dir",
        data.to_str().unwrap(),
        "--destination-dir",
        dest.to_str().unwrap(),
        "--oneshot",
    ];
    run_tbot(&args, &[("TELEPORT_AUTH_SERVER", &list)]).success();
    assert_eq!(generation(&data), 4);
    // Nothing was refused on the way.
    let locks = auth.tctl(&["get", "locks"]).success();
    assert!(!locks.contains("generation"), "{locks}");
}

#[test]
fn every_auth_server_dead_or_a_bad_list_is_one_clear_line() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let join = add_bot(&auth, "robot", "access");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    let (a, b) = (free_port(), free_port());
    let mut args = with_servers(start_args(&auth, &join, &data, &dest), &[&a, &b]);
    args.push("--oneshot".into());
    let e = run_tbot(&args, &[]).failure();
    assert!(e.contains("cannot reach any of the auth servers"), "{e}");
    assert!(
        e.contains(&format!("{a}: ")) && e.contains(&format!("{b}: ")),
        "{e}"
    );
    assert!(!dest.join("tlscert").exists());

    let args = with_servers(
        start_args(&auth, &join, &data, &dest),
        &[&format!("{},,{a}", auth.addr)],
    );
    let e = run_tbot(&args, &[]).failure();
    assert!(
        e.contains("entry 2") && e.contains("remove the extra comma"),
        "{e}"
    );

    let config = scratch.join("both.yaml");
    std::fs::write(
        &config,
        format!("auth_server: {}\nauth_servers: [{a}]\n", auth.addr),
    )
    .unwrap();
    let e = run_tbot(&["start", "-c", config.to_str().unwrap()], &[]).failure();
    assert!(e.contains("both auth_server and auth_servers"), "{e}");
}
