//! Symlink policies.

use std::os::unix::fs::symlink;

use machine_id_destination::{Destination, DestinationError, DirectoryDestination, SymlinkPolicy};

use crate::support::artifacts;

#[test]
fn a_symlinked_component_is_refused_under_secure_and_try_secure() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(tmp.path().join("real")).expect("mkdir");
    let link = tmp.path().join("link");
    symlink(tmp.path().join("real"), &link).expect("symlink");
    let path = link.join("machine-id");

    for policy in [SymlinkPolicy::Secure, SymlinkPolicy::TrySecure] {
        let dest = DirectoryDestination::new(&path).with_symlinks(policy);
        let err = dest.write(&artifacts(1)).expect_err("symlink in path");
        match &err {
            DestinationError::SymlinkRefused {
                symlink, policy: p, ..
            } => {
                assert_eq!(symlink, &link);
                assert_eq!(*p, policy);
            }
            other => panic!("expected SymlinkRefused, got {other:?}"),
        }
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("{} is a symlink", link.display())),
            "{msg}"
        );
        assert!(msg.contains(&format!("policy is `{policy}`")), "{msg}");
        assert!(msg.contains("symlinks: insecure"), "{msg}");
        assert!(
            !tmp.path().join("real/machine-id").exists(),
            "nothing was created through the link"
        );
        assert!(matches!(
            dest.read(),
            Err(DestinationError::SymlinkRefused { .. })
        ));
    }

    let dest = DirectoryDestination::new(&path).with_symlinks(SymlinkPolicy::Insecure);
    dest.write(&artifacts(1))
        .expect("insecure follows the link");
    assert_eq!(dest.read().expect("read"), Some(artifacts(1)));
    assert!(tmp.path().join("real/machine-id/key").is_file());
}

#[test]
fn the_destination_itself_being_a_symlink_is_refused_under_secure() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir(tmp.path().join("real")).expect("mkdir");
    let link = tmp.path().join("dest");
    symlink(tmp.path().join("real"), &link).expect("symlink");
    let err = DirectoryDestination::new(&link)
        .with_symlinks(SymlinkPolicy::Secure)
        .write(&artifacts(1))
        .expect_err("refused");
    assert!(
        matches!(&err, DestinationError::SymlinkRefused { symlink, .. } if symlink == &link),
        "{err:?}"
    );
}

#[test]
fn a_symlink_planted_in_place_of_key_is_never_followed_under_secure() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let path = tmp.path().join("machine-id");
    let victim = tmp.path().join("victim");
    std::fs::write(&victim, b"precious").expect("victim");
    let dest = DirectoryDestination::new(&path).with_symlinks(SymlinkPolicy::Secure);
    dest.write(&artifacts(1)).expect("write");

    std::fs::remove_file(path.join("key")).expect("rm key");
    symlink(&victim, path.join("key")).expect("plant symlink");

    // Reading refuses to follow it, naming the file.
    let err = dest.read().expect_err("symlinked key");
    match &err {
        DestinationError::SymlinkRefused { symlink, .. } => assert_eq!(symlink, &path.join("key")),
        other => panic!("expected SymlinkRefused, got {other:?}"),
    }

    // Insecure reads follow it (that is what the policy means).
    let insecure = DirectoryDestination::new(&path).with_symlinks(SymlinkPolicy::Insecure);
    assert_eq!(
        insecure.read().expect("read").map(|a| a.key),
        Some(b"precious".to_vec())
    );

    // Writing replaces the link itself; the target is untouched.
    dest.write(&artifacts(2)).expect("write over the link");
    assert_eq!(std::fs::read(&victim).expect("victim"), b"precious");
    let meta = std::fs::symlink_metadata(path.join("key")).expect("stat key");
    assert!(meta.file_type().is_file(), "key is a plain file again");
    assert_eq!(dest.read().expect("read"), Some(artifacts(2)));
}
