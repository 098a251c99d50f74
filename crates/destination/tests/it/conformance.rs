//! One suite every `Destination` passes.

use machine_id_destination::{Destination, DirectoryDestination, MemoryDestination, SymlinkPolicy};

use crate::support::artifacts;

fn suite(dest: &dyn Destination) {
    // Reading an empty destination gives None.
    assert_eq!(dest.read().expect("read empty"), None);

    // Round trip.
    let first = artifacts(1);
    dest.write(&first).expect("first write");
    assert_eq!(dest.read().expect("read"), Some(first.clone()));
    // Reading twice does not change anything.
    assert_eq!(dest.read().expect("read again"), Some(first));

    // Overwrite replaces the whole set, including with empty and binary files.
    let mut second = artifacts(2);
    second.known_hosts = Vec::new();
    second.key = vec![0, 255, 10, 13];
    dest.write(&second).expect("second write");
    assert_eq!(dest.read().expect("read"), Some(second));

    // Many rewrites keep exactly the last one.
    for n in 3..20 {
        dest.write(&artifacts(n)).expect("rewrite");
    }
    assert_eq!(dest.read().expect("read"), Some(artifacts(19)));
}

#[test]
fn memory_destination_conforms() {
    suite(&MemoryDestination::new());
}

#[test]
fn memory_destination_clones_share_one_set() {
    let bot_side = MemoryDestination::new();
    let reader_side = bot_side.clone();
    bot_side.write(&artifacts(7)).expect("write");
    assert_eq!(
        reader_side.snapshot().as_deref(),
        Some(&artifacts(7)),
        "the clone sees the write"
    );
}

#[test]
fn directory_destination_conforms_under_every_policy() {
    for policy in [
        SymlinkPolicy::Secure,
        SymlinkPolicy::TrySecure,
        SymlinkPolicy::Insecure,
    ] {
        let tmp = tempfile::tempdir().expect("tempdir");
        suite(&DirectoryDestination::new(tmp.path().join("dest")).with_symlinks(policy));
    }
}

#[test]
fn directory_destination_conforms_in_an_existing_empty_dir() {
    let tmp = tempfile::tempdir().expect("tempdir");
    suite(&DirectoryDestination::new(tmp.path()));
}

#[test]
fn destinations_work_as_trait_objects_behind_arc() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dests: Vec<std::sync::Arc<dyn Destination>> = vec![
        std::sync::Arc::new(MemoryDestination::new()),
        std::sync::Arc::new(DirectoryDestination::new(tmp.path().join("d"))),
    ];
    for d in dests {
        suite(&d);
    }
}
