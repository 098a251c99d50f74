//! Faults under a renewing `tbot`: `kill -9` at random moments, and a full data-dir
//! filesystem. The bot's identity must always load, the bot must never be locked, and every
//! destination set must be one key's.
//!
//! What a plain `open` by path may see: right after a `kill -9` that landed inside a
//! destination write's rename phase, the files under their fixed names can be a mix of the
//! old and the new set (each file whole) until the next `tbot` start rolls the write forward
//! (before it contacts the auth server). `DirectoryDestination::read` never sees the mix: it
//! returns the set the roll-forward will leave. The tests check both: the set `read` returns
//! right after the kill, and the plain files after `recover` (what tbot does at start).

use std::io::Write as _;
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use machine_id_destination::{Destination, DirectoryDestination, GENERATION_FILE};
use machine_id_e2e::{AuthServer, run_tbot, spawn_tbot};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::{Tmpfs, add_bot, free_port, generation, http_get, metric, run, start_args, until};

/// `tbot start` arguments without `--token`: after the first join every start must use
/// the stored identity (the token is single-use; a re-join would fail loudly).
fn args_without_token(auth: &AuthServer, data: &Path, dest: &Path, pin: &str) -> Vec<String> {
    vec![
        "start".into(),
        "--data-dir".into(),
        data.display().to_string(),
        "--destination-dir".into(),
        dest.display().to_string(),
        "--ca-pin".into(),
        pin.into(),
        "--auth-server".into(),
        auth.addr.clone(),
        "--renewal-interval".into(),
        "1s".into(),
        "--certificate-ttl".into(),
        "10m".into(),
    ]
}

fn random_below(n: u64) -> u64 {
    let mut b = [0u8; 8];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    u64::from_le_bytes(b) % n
}

fn pid(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).unwrap())
}

/// Runs a tool, asserting success; returns stdout.
fn tool(cmd: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(cmd).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Asserts `key`, `key.pub`, `sshcert` and `tlscert` in `dir` belong to one key, as the
/// tools see them: `ssh-keygen -y` of the key is `key.pub`; `ssh-keygen -L` of the
/// certificate names `key.pub`'s fingerprint; `openssl` finds the key's public key in
/// `tlscert`.
fn assert_one_key(dir: &Path, what: &str) {
    let p = |f: &str| dir.join(f).display().to_string();
    let derived = tool("ssh-keygen", &["-y", "-f", &p("key")]);
    let key_pub = std::fs::read_to_string(dir.join("key.pub")).unwrap();
    let fields = |s: &str| s.split_whitespace().take(2).collect::<Vec<_>>().join(" ");
    assert_eq!(fields(&derived), fields(&key_pub), "{what}: key vs key.pub");
    let fp = tool("ssh-keygen", &["-l", "-f", &p("key.pub")]);
    let fp = fp.split_whitespace().nth(1).unwrap().to_string();
    let cert = tool("ssh-keygen", &["-L", "-f", &p("sshcert")]);
    assert!(
        cert.lines()
            .any(|l| l.contains("Public key:") && l.contains(&fp)),
        "{what}: sshcert is not for key.pub ({fp}):\n{cert}"
    );
    let from_key = tool("openssl", &["pkey", "-in", &p("key"), "-pubout"]);
    let from_cert = tool(
        "openssl",
        &["x509", "-in", &p("tlscert"), "-noout", "-pubkey"],
    );
    assert_eq!(from_key, from_cert, "{what}: tlscert is not for key");
}

/// Writes the four identity files of a destination's set into `dir` (0600, as ssh-keygen
/// wants) for [`assert_one_key`].
fn write_set(set: &machine_id_destination::Artifacts, dir: &Path) {
    use std::os::unix::fs::OpenOptionsExt as _;
    let _ = std::fs::remove_dir_all(dir);
    std::fs::create_dir_all(dir).unwrap();
    for (name, bytes) in [
        ("key", &set.key),
        ("key.pub", &set.key_pub),
        ("sshcert", &set.ssh_cert),
        ("tlscert", &set.tls_cert),
    ] {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(dir.join(name))
            .unwrap();
        f.write_all(bytes).unwrap();
    }
}

fn locks(auth: &AuthServer) -> serde_json::Value {
    serde_json::from_str(&auth.tctl(&["locks", "ls", "--format=json"]).success()).unwrap()
}

fn assert_no_lock(auth: &AuthServer, what: &str) {
    let locks = locks(auth);
    assert!(
        locks.as_array().is_none_or(Vec::is_empty),
        "{what}: the bot was locked: {locks}\nauth log:\n{}",
        auth.log()
    );
}

/// `kill -9` of a renewing tbot at 30 random moments (during start-up, and during renewals
/// made back to back with SIGHUP), restarting it each time without a token: the data dir
/// always loads (no re-join is possible), the bot is never locked, and the destination
/// holds one key's set both through `read` right after the kill and by path after the
/// roll-forward.
#[test]
fn kill_9_of_a_renewing_tbot_keeps_the_identity_whole_and_the_bot_unlocked() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let join = add_bot(&auth, "robot", "access");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    let mut first = start_args(&auth, &join, &data, &dest);
    first.push("--oneshot".into());
    run_tbot(&first, &[]).success();
    let destination = DirectoryDestination::new(&dest);
    let check = scratch.join("check");

    let kills = 30;
    let (mut in_renames, mut with_pending, mut rolled) = (0, 0, 0);
    let mut last_generation = generation(&data);
    for round in 0..kills {
        let log = scratch.join(format!("tbot-{round}.log"));
        let mut tbot = spawn_tbot(&args_without_token(&auth, &data, &dest, &join.pin), &log);
        let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
        if round % 2 == 0 {
            // Start-up: load, roll-forward, the first renewal.
            std::thread::sleep(Duration::from_millis(random_below(400)));
        } else {
            // Renewals back to back (SIGHUP renews now), killed at a random moment.
            until(Duration::from_secs(60), "tbot to start renewing", || {
                read_log().contains("using the stored bot identity")
            });
            let deadline = Instant::now() + Duration::from_millis(200 + random_below(1500));
            while Instant::now() < deadline {
                let _ = kill(pid(&tbot), Signal::SIGHUP);
                std::thread::sleep(Duration::from_millis(5 + random_below(20)));
            }
        }
        let _ = tbot.kill();
        tbot.wait().unwrap();
        let log_text = read_log();
        assert!(
            !log_text.contains("ERROR") && !log_text.contains("locked"),
            "round {round}:\n{log_text}"
        );
        assert!(
            !log_text.contains("joined the cluster"),
            "round {round}: re-joined"
        );

        // The data dir: `current` names a whole identity, at the same or a newer generation.
        let g = generation(&data);
        assert!(
            g >= last_generation,
            "round {round}: {g} < {last_generation}"
        );
        last_generation = g;
        assert_one_key_of_data(&data, &check, round);
        if data.join("pending").exists() {
            with_pending += 1;
        }

        // The destination, right after the kill, as `read` sees it.
        let marker = std::fs::read_to_string(dest.join(GENERATION_FILE)).unwrap();
        if marker
            .lines()
            .next()
            .and_then(|l| l.parse::<u64>().ok())
            .is_some_and(|g| g % 2 == 1)
        {
            in_renames += 1;
        }
        let set = destination.read().unwrap().expect("a set");
        write_set(&set, &check);
        assert_one_key(&check, &format!("round {round}: read()"));
        // By path, after the roll-forward tbot does at start.
        if destination.recover().unwrap() {
            rolled += 1;
        }
        assert_one_key(&dest, &format!("round {round}: plain files after recover"));
        assert_eq!(std::fs::read(dest.join("tlscert")).unwrap(), set.tls_cert);
    }
    eprintln!(
        "{kills} kills: {with_pending} left a pending renewal key, {in_renames} landed in a destination's rename phase ({rolled} rolled forward); generation {} -> {last_generation}",
        1
    );

    // The bot renews after all that, without a token, and was never locked.
    let mut last = args_without_token(&auth, &data, &dest, &join.pin);
    last.push("--oneshot".into());
    let out = run_tbot(&last, &[]);
    out.success();
    assert!(generation(&data) > last_generation, "{}", out.stderr);
    assert_one_key(&dest, "after the final run");
    assert_no_lock(&auth, "after the kills");
    assert!(
        !data.join("pending").exists(),
        "a pending key outlived its renewal"
    );
}

/// The stored identity: its key and tlscert are one key (via a copy, as ssh-keygen wants
/// 0600 files and no other files to matter).
fn assert_one_key_of_data(data: &Path, check: &Path, round: usize) {
    let cur = data.join("current");
    let _ = std::fs::remove_dir_all(check);
    std::fs::create_dir_all(check).unwrap();
    let key = tool(
        "openssl",
        &["pkey", "-in", cur.join("key").to_str().unwrap(), "-pubout"],
    );
    let cert = tool(
        "openssl",
        &[
            "x509",
            "-in",
            cur.join("tlscert").to_str().unwrap(),
            "-noout",
            "-pubkey",
        ],
    );
    assert_eq!(
        key, cert,
        "round {round}: the stored key and tlscert differ"
    );
    let derived = tool(
        "ssh-keygen",
        &["-y", "-f", cur.join("key").to_str().unwrap()],
    );
    let key_pub = std::fs::read_to_string(cur.join("key.pub")).unwrap();
    assert_eq!(
        derived.split_whitespace().nth(1),
        key_pub.split_whitespace().nth(1),
        "round {round}: the stored key.pub"
    );
}

/// A full data-dir filesystem during renewals (a small tmpfs on the data dir), then space
/// freed: the bot reports it loudly, never renews from an identity it could not save, a
/// `kill -9` in that state and a restart retry the same request (the pending key) without
/// getting the bot locked, and once space is back it saves and renews on, with no re-join.
#[test]
fn a_full_data_dir_never_moves_the_server_past_the_disk() {
    let auth = AuthServer::start();
    let scratch = auth.scratch();
    let join = add_bot(&auth, "robot", "access");
    let (data, dest) = (scratch.join("data"), scratch.join("dest"));
    std::fs::create_dir_all(&data).unwrap();
    let _mount = Tmpfs::mount(&data, "size=256k,mode=0700");
    let mut first = start_args(&auth, &join, &data, &dest);
    first.push("--oneshot".into());
    run_tbot(&first, &[]).success();

    let diag = free_port();
    let mut args = args_without_token(&auth, &data, &dest, &join.pin);
    args.extend(["--diag-addr".to_string(), diag.clone()]);
    let log = scratch.join("tbot.log");
    let mut tbot = spawn_tbot(&args, &log);
    let read_log = || std::fs::read_to_string(&log).unwrap_or_default();
    until(Duration::from_secs(60), "two renewals", || {
        generation(&data) >= 3
    });

    // Fill the filesystem: renewals fail before anything is sent, or a renewed identity
    // cannot be saved.
    let filler = data.join("filler");
    let mut f = std::fs::File::create(&filler).unwrap();
    while f.write_all(&[0u8; 4096]).is_ok() {}
    let full_len = f.metadata().unwrap().len();
    until(
        Duration::from_secs(60),
        "renewals failing for space",
        || {
            let l = read_log();
            l.contains("cannot record the key of the next renewal")
                || l.contains("cannot save the renewed bot identity")
        },
    );
    // Room for the pending key (one page) but not for a whole identity: the renewal is
    // sent, the server moves on, and the save fails.
    f.set_len(full_len - 8192).unwrap();
    f.sync_all().unwrap();
    // Closed, so that removing it later frees the space.
    drop(f);
    until(
        Duration::from_secs(60),
        "a renewed identity that cannot be saved",
        || read_log().contains("cannot save the renewed bot identity"),
    );
    let on_disk = generation(&data);
    assert!(
        data.join("pending").exists(),
        "the renewal's key is pending"
    );
    let log_text = read_log();
    let error = log_text
        .lines()
        .find(|l| l.contains("cannot save the renewed bot identity"))
        .unwrap();
    assert!(
        error.contains("ERROR") && error.contains("no space left") && error.contains("free space"),
        "{error}"
    );
    let (code, body) = http_get(&diag, "/readyz");
    assert_eq!(code, 503, "{body}");
    assert!(
        body.contains("cannot save the renewed bot identity") && body.contains("free space"),
        "{body}"
    );
    let (_, metrics) = http_get(&diag, "/metrics");
    assert_eq!(
        metric(&metrics, "tbot_identity_unsaved"),
        Some(1),
        "{metrics}"
    );

    // Further attempts retry the save and do not renew from the unsaved identity.
    let renewed = read_log().matches("renewed the bot identity").count();
    until(Duration::from_secs(60), "more failed saves", || {
        read_log()
            .matches("cannot save the renewed bot identity")
            .count()
            >= 3
    });
    assert_eq!(
        read_log().matches("renewed the bot identity").count(),
        renewed,
        "renewed from an identity that is not on disk"
    );
    assert_eq!(generation(&data), on_disk);

    // A crash in that state: the restart presents the stored identity with the pending key,
    // the same request the server already answered.
    let _ = tbot.kill();
    tbot.wait().unwrap();
    let log2 = scratch.join("tbot-2.log");
    let mut tbot = spawn_tbot(&args, &log2);
    let read_log2 = || std::fs::read_to_string(&log2).unwrap_or_default();
    until(Duration::from_secs(60), "the retried renewal", || {
        read_log2().contains("cannot save the renewed bot identity")
            || read_log2().contains("locked")
    });
    let text = read_log2();
    assert!(
        text.contains("retrying the renewal with the pending key"),
        "{text}"
    );
    assert!(
        !text.contains("locked"),
        "{text}\nauth log:\n{}",
        auth.log()
    );
    assert_no_lock(&auth, "after the retry");

    // Space again: the identity is saved and renewals go on.
    std::fs::remove_file(&filler).unwrap();
    until(
        Duration::from_secs(60),
        "the identity saved after space was freed",
        || generation(&data) > on_disk,
    );
    until(Duration::from_secs(60), "renewals after the save", || {
        generation(&data) >= on_disk + 3
    });
    let (code, body) = http_get(&diag, "/readyz");
    assert_eq!(code, 200, "{body}");
    let (_, metrics) = http_get(&diag, "/metrics");
    assert_eq!(
        metric(&metrics, "tbot_identity_unsaved"),
        Some(0),
        "{metrics}"
    );
    assert!(
        read_log2().contains("identity renewals resume"),
        "{}",
        read_log2()
    );
    assert!(!read_log2().contains("joined the cluster"));
    let _ = kill(pid(&tbot), Signal::SIGTERM);
    assert!(tbot.wait().unwrap().success(), "{}", read_log2());
    assert_no_lock(&auth, "at the end");
    let (ok, text) = run("ls", &[data.to_str().unwrap()]);
    assert!(ok, "{text}");
}
