//! The storage's unit tests: units replaced whole, crash leftovers, the pending key, the
//! flat layout of earlier versions, memory storage.
#![allow(clippy::unwrap_used)] // tests

use std::os::unix::fs::PermissionsExt as _;

use super::*;
use crate::BotError;

fn sample(n: u32) -> StoredIdentity {
    StoredIdentity {
        key_pem: format!("k{n}"),
        key_pub: format!("kp{n}"),
        ssh_cert: format!("sc{n}"),
        tls_cert_pem: format!("tc{n}"),
        tls_ca_pem: "ca".into(),
        ssh_ca: "sca".into(),
        token_hash: "th".into(),
    }
}

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o777
}

fn names(p: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(p)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    v.sort();
    v
}

#[test]
fn round_trip_modes_and_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    let d = DataDir::open(path.clone()).unwrap();
    assert!(d.load().unwrap().is_none());
    d.save(&sample(1)).unwrap();
    assert_eq!(d.load().unwrap(), Some(sample(1)));
    assert_eq!(mode(&path), 0o700);
    assert_eq!(mode(&path.join("id-1")), 0o700);
    for f in files::IDENTITY {
        assert_eq!(mode(&path.join("current").join(f)), 0o600, "{f}");
    }
    assert_eq!(mode(&path.join(files::LOCK)), 0o600);
    let e = DataDir::open(path.clone()).unwrap_err();
    assert!(matches!(e, BotError::DataDirLocked { .. }), "{e}");
    drop(d);
    DataDir::open(path).unwrap();
}

#[test]
fn each_save_is_a_new_unit_and_the_old_one_goes() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    let d = DataDir::open(path.clone()).unwrap();
    d.save(&sample(1)).unwrap();
    d.save(&sample(2)).unwrap();
    assert_eq!(d.load().unwrap(), Some(sample(2)));
    assert_eq!(
        std::fs::read_link(path.join("current")).unwrap(),
        Path::new("id-2")
    );
    assert_eq!(names(&path), ["current", "id-2", "lock"]);
}

/// What a `kill -9` at each step of a save leaves, and what the next open makes of it.
#[test]
fn an_interrupted_save_leaves_the_old_identity_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    let d = DataDir::open(path.clone()).unwrap();
    d.save(&sample(1)).unwrap();
    drop(d);
    // Killed while writing id-2: a partial unit, `current` still at id-1.
    std::fs::create_dir(path.join("id-2")).unwrap();
    std::fs::write(path.join("id-2/tokenhash"), "th").unwrap();
    std::fs::write(path.join("id-2/tlscacerts"), "ca").unwrap();
    // Killed after making the temporary link, before the rename.
    std::os::unix::fs::symlink("id-2", path.join(".tmp-current")).unwrap();
    let d = DataDir::open(path.clone()).unwrap();
    assert_eq!(d.load().unwrap(), Some(sample(1)));
    assert_eq!(
        names(&path),
        ["current", "id-1", "lock"],
        "leftovers removed"
    );
    // Killed after the switch, before the old unit was removed.
    d.save(&sample(2)).unwrap();
    drop(d);
    std::fs::create_dir(path.join("id-1")).unwrap();
    std::fs::write(path.join("id-1/key"), "k1").unwrap();
    let d = DataDir::open(path.clone()).unwrap();
    assert_eq!(d.load().unwrap(), Some(sample(2)));
    assert_eq!(names(&path), ["current", "id-2", "lock"]);
    // The next save after leftovers picks a fresh number.
    std::fs::create_dir(path.join("id-9")).unwrap();
    d.save(&sample(3)).unwrap();
    assert_eq!(
        std::fs::read_link(path.join("current")).unwrap(),
        Path::new("id-10")
    );
    assert_eq!(d.load().unwrap(), Some(sample(3)));
}

#[test]
fn the_flat_layout_is_read_and_migrated_by_the_next_save() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    std::fs::create_dir(&path).unwrap();
    let old = sample(1);
    for (name, body) in [
        (files::KEY, &old.key_pem),
        (files::KEY_PUB, &old.key_pub),
        (files::SSH_CERT, &old.ssh_cert),
        (files::TLS_CERT, &old.tls_cert_pem),
        (files::TLS_CA_CERTS, &old.tls_ca_pem),
        (files::SSH_CA_CERTS, &old.ssh_ca),
        (files::TOKEN_HASH, &old.token_hash),
    ] {
        std::fs::write(path.join(name), body).unwrap();
    }
    let d = DataDir::open(path.clone()).unwrap();
    assert_eq!(d.load().unwrap(), Some(old), "the flat layout still loads");
    d.save(&sample(2)).unwrap();
    assert_eq!(d.load().unwrap(), Some(sample(2)));
    assert_eq!(names(&path), ["current", "id-1", "lock"], "flat files gone");
}

#[test]
fn an_incomplete_flat_identity_is_none() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join(files::KEY), "k").unwrap();
    let d = DataDir::open(path).unwrap();
    assert_eq!(d.load().unwrap(), None);
}

#[test]
fn a_pointer_outside_the_data_dir_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    std::fs::create_dir(&path).unwrap();
    std::os::unix::fs::symlink("/etc", path.join("current")).unwrap();
    let d = DataDir::open(path).unwrap();
    let e = d.load().unwrap_err().to_string();
    assert!(e.contains("names /etc instead of a unit directory"), "{e}");
}

#[test]
fn an_oversized_file_is_refused_with_its_size() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    let d = DataDir::open(path.clone()).unwrap();
    d.save(&sample(1)).unwrap();
    let f = path.join("current/tlscert");
    std::fs::remove_file(&f).unwrap();
    std::fs::write(&f, vec![b'x'; 2 << 20]).unwrap();
    let e = d.load().unwrap_err().to_string();
    assert!(e.contains("2097152 bytes") && e.contains("tlscert"), "{e}");
}

fn pending_semantics(s: &Storage) {
    assert_eq!(s.load_pending_key("aa").unwrap(), None);
    s.save_pending_key("aa", "-----BEGIN PRIVATE KEY-----\nK\n")
        .unwrap();
    // Reused as many times as asked, for the same parent only.
    for _ in 0..2 {
        assert_eq!(
            s.load_pending_key("aa").unwrap().as_deref(),
            Some("-----BEGIN PRIVATE KEY-----\nK\n")
        );
    }
    // Bound to another certificate: ignored and removed.
    assert_eq!(s.load_pending_key("bb").unwrap(), None);
    assert_eq!(s.load_pending_key("aa").unwrap(), None);
    // A save removes it.
    s.save_pending_key("aa", "-----BEGIN PRIVATE KEY-----\nK\n")
        .unwrap();
    s.save(&sample(1)).unwrap();
    assert_eq!(s.load_pending_key("aa").unwrap(), None);
    assert_eq!(s.load().unwrap(), Some(sample(1)));
}

#[test]
fn pending_key_in_a_directory() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    let s = Storage::directory(&path).unwrap();
    s.save_pending_key("aa", "-----BEGIN PRIVATE KEY-----\nK\n")
        .unwrap();
    assert_eq!(mode(&path.join(files::PENDING)), 0o600);
    s.clear_pending_key().unwrap();
    pending_semantics(&s);
    assert!(!path.join(files::PENDING).exists());
}

#[test]
fn pending_key_in_memory() {
    pending_semantics(&Storage::memory());
}

#[test]
fn an_open_data_dir_is_tightened_to_0700() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    std::fs::create_dir(&path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _d = DataDir::open(path.clone()).unwrap();
    assert_eq!(mode(&path), 0o700);
}

#[test]
fn a_file_is_not_a_data_dir() {
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("data");
    std::fs::write(&path, "x").unwrap();
    let e = DataDir::open(path).unwrap_err().to_string();
    assert!(e.contains("not a directory"), "{e}");
}

#[test]
fn debug_shows_nothing() {
    assert!(!format!("{:?}", sample(1)).contains("kp"));
}
