//! Directory specifics: modes, staging cleanup, failures, concurrent readers.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use machine_id_destination::{
    ArtifactName, Destination, DestinationError, DirectoryDestination, GENERATION_FILE,
};

use crate::support::{Mount, artifacts, is_consistent, list, run, set_of};

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).expect("stat").permissions().mode() & 0o7777
}

fn expected_names() -> Vec<String> {
    let mut names: Vec<String> = ArtifactName::ALL
        .iter()
        .map(|n| n.file_name().to_owned())
        .chain([GENERATION_FILE.to_owned()])
        .collect();
    names.sort();
    names
}

#[test]
fn files_are_0600_and_a_created_dir_is_0700() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("a/b/machine-id");
    let dest = DirectoryDestination::new(&path);
    dest.write(&artifacts(1)).expect("write");
    assert_eq!(mode(&path), 0o700);
    for name in expected_names() {
        assert_eq!(mode(&path.join(&name)), 0o600, "{name}");
    }
    // A rewrite keeps the modes (files are replaced, never chmod-ed).
    dest.write(&artifacts(2)).expect("rewrite");
    for name in expected_names() {
        assert_eq!(mode(&path.join(&name)), 0o600, "{name}");
    }
}

#[test]
fn an_existing_looser_dir_is_used_as_is_with_a_warning() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("shared");
    std::fs::create_dir(&path).expect("mkdir");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    // A stale file of the set with a loose mode is replaced by a 0600 one.
    std::fs::write(path.join("key"), b"old").expect("write old key");
    std::fs::set_permissions(path.join("key"), std::fs::Permissions::from_mode(0o644))
        .expect("chmod");
    let dest = DirectoryDestination::new(&path);
    dest.write(&artifacts(1))
        .expect("a looser dir is not an error");
    assert_eq!(mode(&path), 0o755, "the dir's mode is left alone");
    assert_eq!(mode(&path.join("key")), 0o600);
}

#[test]
fn no_staging_files_are_left_and_stale_ones_are_removed() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = DirectoryDestination::new(tmp.path());
    dest.write(&artifacts(1)).expect("write");
    assert_eq!(list(tmp.path()), expected_names());
    // A crashed writer's leftovers go at the next write.
    std::fs::write(tmp.path().join(".tbot-tmp-deadbeef-key"), b"secret").expect("plant");
    dest.write(&artifacts(2)).expect("write");
    assert_eq!(list(tmp.path()), expected_names());
}

#[test]
fn a_directory_in_place_of_a_file_fails_before_anything_is_replaced() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = DirectoryDestination::new(tmp.path());
    dest.write(&artifacts(1)).expect("write");
    std::fs::remove_file(tmp.path().join("tlscert")).expect("rm");
    std::fs::create_dir(tmp.path().join("tlscert")).expect("mkdir in the way");
    std::fs::write(tmp.path().join("tlscert/x"), b"x").expect("non-empty");

    let err = dest.write(&artifacts(2)).expect_err("must fail");
    assert!(matches!(err, DestinationError::NotAFile { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.contains(&format!("{}", tmp.path().join("tlscert").display())),
        "{msg}"
    );
    assert!(msg.contains("remove it"), "{msg}");
    // Every other file is still set 1, and no staging file is left.
    for name in ArtifactName::ALL {
        if name == ArtifactName::TlsCert {
            continue;
        }
        let bytes = std::fs::read(tmp.path().join(name.file_name())).expect("read");
        assert_eq!(set_of(&bytes), Some(1), "{name}");
    }
    assert!(!list(tmp.path()).iter().any(|n| n.starts_with(".tbot-tmp-")));
}

/// Disk full, simulated with a small tmpfs (root ignores permission bits, but not a full
/// filesystem). The old set must survive and no staging file may remain.
#[test]
fn disk_full_leaves_the_old_set_whole() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mnt = tmp.path().join("small");
    std::fs::create_dir(&mnt).expect("mkdir");
    let (ok, _, err) = run(Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs"])
        .arg(&mnt));
    assert!(
        ok,
        "mounting a tmpfs needs root with CAP_SYS_ADMIN (as in CI): {err}"
    );
    let _guard = Mount(mnt.clone());

    let dest = DirectoryDestination::new(&mnt);
    dest.write(&artifacts(1)).expect("small write fits");
    let mut huge = artifacts(2);
    huge.tls_ca_certs = vec![b'A'; 1024 * 1024];
    let err = dest.write(&huge).expect_err("must not fit");
    assert!(matches!(err, DestinationError::DiskFull { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(
        msg.starts_with(&format!(
            "no space left writing {}",
            mnt.join("tlscacerts").display()
        )),
        "{msg}"
    );
    assert_eq!(dest.read().expect("read"), Some(artifacts(1)));
    assert_eq!(list(&mnt), expected_names());
}

/// A read-only filesystem, simulated with a read-only bind mount of the destination.
#[test]
fn read_only_destination_fails_clearly_and_keeps_the_old_set() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("ro");
    let dest = DirectoryDestination::new(&path);
    dest.write(&artifacts(1)).expect("write");
    let (ok, _, err) = run(Command::new("mount").arg("--bind").arg(&path).arg(&path));
    assert!(ok, "bind mount needs root (as in CI): {err}");
    let _guard = Mount(path.clone());
    let (ok, _, err) = run(Command::new("mount")
        .args(["-o", "remount,ro,bind"])
        .arg(&path));
    assert!(ok, "remount ro: {err}");

    let err = dest.write(&artifacts(2)).expect_err("read-only");
    assert!(matches!(err, DestinationError::ReadOnly { .. }), "{err:?}");
    assert!(err.to_string().contains("read-only"), "{err}");
    assert!(
        err.to_string().contains(&path.display().to_string()),
        "{err}"
    );
    assert_eq!(dest.read().expect("read"), Some(artifacts(1)));
}

#[test]
fn a_path_under_a_regular_file_is_not_a_directory() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::write(tmp.path().join("file"), b"x").expect("write");
    let dest = DirectoryDestination::new(tmp.path().join("file/dest"));
    let err = dest.write(&artifacts(1)).expect_err("not a dir");
    assert!(
        matches!(err, DestinationError::NotADirectory { .. }),
        "{err:?}"
    );
}

#[test]
fn an_interrupted_write_is_reported_and_healed_by_the_next_write() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = DirectoryDestination::new(tmp.path());
    dest.write(&artifacts(1)).expect("write");
    // What a writer that died during its rename phase leaves: an odd generation.
    std::fs::write(tmp.path().join(GENERATION_FILE), b"3\n").expect("plant");
    let err = dest.read().expect_err("torn");
    assert!(
        matches!(err, DestinationError::InterruptedWrite { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("run tbot again"), "{err}");
    dest.write(&artifacts(2)).expect("rewrite");
    assert_eq!(dest.read().expect("read"), Some(artifacts(2)));
    let marker = std::fs::read_to_string(tmp.path().join(GENERATION_FILE)).expect("marker");
    assert_eq!(marker, "6\n", "odd 3 -> in progress 5 -> done 6");
}

#[test]
fn a_partial_set_is_an_error_not_a_silent_mix() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dest = DirectoryDestination::new(tmp.path());
    dest.write(&artifacts(1)).expect("write");
    std::fs::remove_file(tmp.path().join("sshcert")).expect("rm");
    let err = dest.read().expect_err("partial");
    assert!(
        matches!(err, DestinationError::Incomplete { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("missing sshcert"), "{err}");
}

/// A reader thread loops while a writer rewrites with fresh contents. `read()` (the seqlock
/// protocol) must never return files of two sets. A plain reader that opens `key.pub` then
/// `sshcert` by path, like OpenSSH, has no such guarantee; we count how often it saw a mix,
/// to show the window is small, but do not assert on a timing-dependent figure.
#[test]
fn concurrent_readers_never_see_a_key_with_another_keys_cert() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().to_path_buf();
    let writer = Arc::new(DirectoryDestination::new(&path));
    writer.write(&artifacts(0)).expect("first write");
    let done = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicU64::new(0));
    let plain_mixes = Arc::new(AtomicU64::new(0));

    let readers: Vec<_> = (0..2)
        .map(|_| {
            let (path, done, reads) = (path.clone(), done.clone(), reads.clone());
            std::thread::spawn(move || {
                let reader = DirectoryDestination::new(&path);
                let mut last = 0;
                while !done.load(Ordering::Relaxed) {
                    let set = reader.read().expect("read").expect("a set is there");
                    assert!(
                        is_consistent(&set),
                        "read() returned a mixed set: {:?}",
                        set.iter()
                            .map(|(n, b)| (n.file_name(), set_of(b)))
                            .collect::<Vec<_>>()
                    );
                    let n = set_of(&set.key).unwrap_or(0);
                    assert!(n >= last, "sets only move forward");
                    last = n;
                    reads.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    let plain = {
        let (path, done, mixes) = (path.clone(), done.clone(), plain_mixes.clone());
        std::thread::spawn(move || {
            let mut total = 0u64;
            while !done.load(Ordering::Relaxed) {
                let key_pub = std::fs::read(path.join("key.pub")).expect("read key.pub");
                let cert = std::fs::read(path.join("sshcert")).expect("read sshcert");
                // Each file is always whole (renames are atomic).
                assert!(set_of(&key_pub).is_some() && set_of(&cert).is_some());
                if set_of(&key_pub) != set_of(&cert) {
                    mixes.fetch_add(1, Ordering::Relaxed);
                }
                total += 1;
            }
            total
        })
    };

    for n in 1..=100 {
        writer.write(&artifacts(n)).expect("rewrite");
    }
    done.store(true, Ordering::Relaxed);
    for r in readers {
        r.join().expect("reader thread");
    }
    let plain_total = plain.join().expect("plain reader");
    assert!(reads.load(Ordering::Relaxed) > 0, "the readers ran");
    eprintln!(
        "read(): {} consistent sets; plain path reader: {} of {} pairs mixed",
        reads.load(Ordering::Relaxed),
        plain_mixes.load(Ordering::Relaxed),
        plain_total
    );
    assert_eq!(writer.read().expect("read"), Some(artifacts(100)));
}

#[test]
fn concurrent_writers_are_serialized() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().to_path_buf();
    let handles: Vec<_> = (0..4u64)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let dest = DirectoryDestination::new(&path);
                for i in 0..25 {
                    dest.write(&artifacts(t * 100 + i)).expect("write");
                }
            })
        })
        .collect();
    for h in handles {
        h.join().expect("writer");
    }
    let set = DirectoryDestination::new(&path)
        .read()
        .expect("read")
        .expect("set");
    assert!(is_consistent(&set));
    assert_eq!(list(&path), expected_names());
    let marker = std::fs::read_to_string(path.join(GENERATION_FILE)).expect("marker");
    assert_eq!(marker, "200\n", "100 writes, two generations each");
}
