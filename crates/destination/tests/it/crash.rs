//! A writer killed during its renames: the set is read whole and rolled forward.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use machine_id_destination::{ArtifactName, Destination, DirectoryDestination, GENERATION_FILE};

use crate::support::{artifacts, is_consistent, list, set_of};

/// Lays out what a writer of set `n` killed after `renamed` of its eight renames leaves,
/// following the documented protocol: every staging file written, the odd marker naming the
/// nonce in place, the first `renamed` files renamed.
fn crashed_write(dir: &Path, generation: u64, n: u64, renamed: usize) {
    let nonce = "0123456789abcdef";
    let set = artifacts(n);
    for (i, name) in ArtifactName::ALL.into_iter().enumerate() {
        let target = dir.join(name.file_name());
        if i < renamed {
            std::fs::write(&target, set.get(name)).expect("renamed file");
        } else {
            let temp = dir.join(format!(".tbot-tmp-{nonce}-{}", name.file_name()));
            std::fs::write(temp, set.get(name)).expect("staged file");
        }
    }
    std::fs::write(
        dir.join(format!(".tbot-tmp-{nonce}-{GENERATION_FILE}")),
        format!("{}\n", generation + 1),
    )
    .expect("staged marker");
    std::fs::write(
        dir.join(GENERATION_FILE),
        format!("{generation}\n{nonce}\n"),
    )
    .expect("odd marker");
}

fn plain_set(dir: &Path) -> machine_id_destination::Artifacts {
    let mut a = machine_id_destination::Artifacts::default();
    for name in ArtifactName::ALL {
        *a.get_mut(name) = std::fs::read(dir.join(name.file_name())).expect("plain read");
    }
    a
}

#[test]
fn a_write_killed_after_any_rename_is_read_whole_and_rolled_forward() {
    for renamed in 0..=ArtifactName::ALL.len() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dest = DirectoryDestination::new(tmp.path());
        dest.write(&artifacts(1)).expect("write");
        crashed_write(tmp.path(), 3, 2, renamed);

        // The reader is handed the set the roll-forward will leave, without writing.
        assert_eq!(dest.read().expect("read"), Some(artifacts(2)), "{renamed}");
        let plain = plain_set(tmp.path());
        assert_eq!(
            is_consistent(&plain),
            renamed == 0 || renamed == ArtifactName::ALL.len(),
            "by path, a mix until rolled forward ({renamed} renamed)"
        );

        // Roll forward: the plain files are set 2, the marker even, no staging file left.
        assert!(dest.recover().expect("recover"), "{renamed}");
        assert_eq!(plain_set(tmp.path()), artifacts(2), "{renamed}");
        let marker = std::fs::read_to_string(tmp.path().join(GENERATION_FILE)).expect("marker");
        assert_eq!(marker, "4\n");
        assert!(!list(tmp.path()).iter().any(|n| n.starts_with(".tbot-tmp-")));
        assert!(
            !dest.recover().expect("recover again"),
            "nothing left to do"
        );
        dest.write(&artifacts(3)).expect("next write");
        assert_eq!(dest.read().expect("read"), Some(artifacts(3)));
    }
}

/// A write that fails for a full disk after an interrupted one still leaves a whole set:
/// the interrupted write is finished before anything new is staged. (A small tmpfs; the
/// suite runs as root, as in CI.)
#[test]
fn a_failing_write_after_an_interrupted_one_leaves_the_finished_set() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    let (ok, _, err) = crate::support::run(
        Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs"])
            .arg(&mnt),
    );
    assert!(ok, "mounting a tmpfs needs root: {err}");
    let _guard = crate::support::Mount(mnt.clone());
    let dest = DirectoryDestination::new(&mnt);
    dest.write(&artifacts(1)).expect("write");
    crashed_write(&mnt, 3, 2, 5);
    let mut filler = std::fs::File::create(mnt.join("filler")).expect("filler");
    while std::io::Write::write_all(&mut filler, &[0u8; 4096]).is_ok() {}
    drop(filler);

    let err = dest.write(&artifacts(3)).expect_err("disk full");
    assert!(err.to_string().contains("no space left"), "{err}");
    assert_eq!(
        plain_set(&mnt),
        artifacts(2),
        "rolled forward, then the write failed"
    );
    assert_eq!(dest.read().expect("read"), Some(artifacts(2)));
}

/// Real kills: a child process rewrites the destination in a loop and is killed with
/// SIGKILL at random moments, many times. After every kill `read()` returns one whole set,
/// and after `recover()` so do the plain files opened by path.
#[test]
fn kill_9_of_a_writer_never_leaves_a_mixed_set() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("dest");
    let dest = DirectoryDestination::new(&path);
    dest.write(&artifacts(1)).expect("first write");
    let exe = std::env::current_exe().expect("test binary");
    let mut interrupted = 0u32;
    let kills = 60u32;
    for round in 0..kills {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash::writer_child",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(WRITER_ENV, &path)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn writer");
        // Wait until the child is writing, then kill it a random moment later.
        let marker = || std::fs::read_to_string(path.join(GENERATION_FILE)).unwrap_or_default();
        let before = marker();
        let started = Instant::now();
        while marker() == before {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "the writer never wrote"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        std::thread::sleep(Duration::from_micros(u64::from(random_u32() % 3000)));
        child.kill().expect("SIGKILL");
        child.wait().expect("reap");

        let odd = marker()
            .lines()
            .next()
            .and_then(|l| l.parse::<u64>().ok())
            .is_some_and(|g| g % 2 == 1);
        if odd {
            interrupted += 1;
        }
        let set = dest.read().expect("read").expect("a set");
        assert!(is_consistent(&set), "round {round}: read() returned a mix");
        dest.recover().expect("recover");
        let plain = plain_set(&path);
        assert!(
            is_consistent(&plain),
            "round {round}: plain files mixed after recover"
        );
        assert_eq!(
            plain, set,
            "round {round}: recover left what read() returned"
        );
    }
    eprintln!("{kills} kills, {interrupted} during the rename phase");
}

const WRITER_ENV: &str = "MACHINE_ID_TEST_WRITER_DIR";

/// The child of [`kill_9_of_a_writer_never_leaves_a_mixed_set`]: rewrites the destination
/// until killed. Without the variable (a normal test run) it does nothing.
#[test]
fn writer_child() {
    let Some(dir) = std::env::var_os(WRITER_ENV) else {
        return;
    };
    let dest = DirectoryDestination::new(std::path::PathBuf::from(dir));
    let mut n = dest
        .read()
        .ok()
        .flatten()
        .and_then(|a| set_of(&a.key))
        .unwrap_or(1);
    loop {
        n += 1;
        dest.write(&artifacts(n)).expect("child write");
    }
}

fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .expect("urandom");
    u32::from_le_bytes(b)
}
