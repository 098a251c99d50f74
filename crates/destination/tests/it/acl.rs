//! `init_acls`: the reader user can read the outputs, others cannot, and the ACLs read back
//! with `getfacl`. Runs as root (as CI does): chown and setpriv need it.

use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::Path;
use std::process::Command;

use machine_id_destination::{
    Destination, DirectoryDestination, InitAcls, SymlinkPolicy, UnixUser, init_acls,
};

use crate::support::{artifacts, list, run};

const READER: u32 = 48_243;
const STRANGER: u32 = 48_244;

/// Runs `sh -c script` as `uid` with no supplementary groups.
fn as_user(uid: u32, script: &str) -> (bool, String, String) {
    run(Command::new("setpriv")
        .arg(format!("--reuid={uid}"))
        .arg(format!("--regid={uid}"))
        .arg("--clear-groups")
        .args(["sh", "-c", script]))
}

/// `getfacl -cpn PATH`; `None` only when `getfacl` is missing and MACHINE_ID_ALLOW_SKIP=1
/// (otherwise a missing `getfacl` fails the test: tests/test.sh installs it).
fn getfacl(path: &Path) -> Option<String> {
    let Ok(out) = Command::new("getfacl").arg("-cpn").arg(path).output() else {
        assert!(
            std::env::var_os("MACHINE_ID_ALLOW_SKIP").is_some_and(|v| v == "1"),
            "getfacl is missing (apt-get install acl; tests/test.sh does it); set \
             MACHINE_ID_ALLOW_SKIP=1 to check the ACLs by access only"
        );
        return None;
    };
    assert!(out.status.success(), "getfacl {}", path.display());
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn init(dir: &Path, clean: bool) -> InitAcls {
    InitAcls {
        destination_dir: dir.to_path_buf(),
        bot_user: UnixUser::lookup("root").expect("root exists"),
        reader_user: UnixUser::lookup(&READER.to_string()).expect("numeric"),
        owner: None,
        clean,
        symlinks: SymlinkPolicy::Secure,
    }
}

#[test]
fn reader_user_can_read_outputs_and_nobody_else_can() {
    let tmp = tempfile::tempdir().expect("tempdir");
    std::fs::set_permissions(tmp.path(), std::fs::Permissions::from_mode(0o711)).expect("chmod");
    let dir = tmp.path().join("machine-id");
    // A file from before init gets the ACL too.
    let dest = DirectoryDestination::new(&dir);
    dest.write(&artifacts(1)).expect("write before init");
    init_acls(&init(&dir, false)).expect("init");

    let key = dir.join("key");
    let (ok, out, err) = as_user(READER, &format!("cat '{}'", key.display()));
    assert!(ok, "reader reads a file written before init: {err}");
    assert_eq!(out, "key of set 1\n");

    // Files written after init inherit the default ACL.
    dest.write(&artifacts(2)).expect("write after init");
    for name in list(&dir) {
        let p = dir.join(&name);
        let (ok, _, err) = as_user(READER, &format!("cat '{}' >/dev/null", p.display()));
        assert!(ok, "reader reads {name}: {err}");
        let (ok, _, _) = as_user(STRANGER, &format!("cat '{}' >/dev/null", p.display()));
        assert!(!ok, "a stranger must not read {name}");
        assert_eq!(
            std::fs::metadata(&p).expect("stat").mode() & 0o007,
            0,
            "{name}: other has nothing"
        );
    }
    let (ok, _, _) = as_user(READER, &format!("echo x >> '{}'", key.display()));
    assert!(!ok, "the reader cannot write the key");
    let (ok, _, _) = as_user(READER, &format!("touch '{}/new'", dir.display()));
    assert!(!ok, "the reader cannot create files");
    let (ok, out, _) = as_user(READER, &format!("ls '{}'", dir.display()));
    assert!(ok && out.contains("sshcert"), "the reader can list: {out}");
    assert_eq!(dest.read().expect("read"), Some(artifacts(2)));

    if let Some(facl) = getfacl(&dir) {
        for line in [
            "user::rwx",
            &format!("user:{READER}:r-x"),
            "group::---",
            "mask::rwx",
            "other::---",
            "default:user::rw-",
            &format!("default:user:{READER}:r--"),
            "default:group::---",
            "default:mask::r--",
            "default:other::---",
        ] {
            assert!(
                facl.lines().any(|l| l == line),
                "dir ACL lacks {line}:\n{facl}"
            );
        }
        let facl = getfacl(&key).expect("getfacl key");
        for line in [
            "user::rw-",
            &format!("user:{READER}:r--"),
            "group::---",
            "mask::r--",
            "other::---",
        ] {
            assert!(
                facl.lines().any(|l| l == line),
                "key ACL lacks {line}:\n{facl}"
            );
        }
    } else {
        eprintln!("getfacl not installed (Debian package `acl`); ACLs checked by access only");
    }
}

#[test]
fn init_with_clean_removes_the_old_set_and_sets_the_owner() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let dir = tmp.path().join("machine-id");
    let dest = DirectoryDestination::new(&dir);
    dest.write(&artifacts(1)).expect("write");
    let mut opts = init(&dir, true);
    opts.owner = Some(UnixUser::parse_owner("4321:4322").expect("owner"));
    init_acls(&opts).expect("init --clean");
    assert!(list(&dir).is_empty(), "{:?}", list(&dir));
    let meta = std::fs::metadata(&dir).expect("stat");
    assert_eq!((meta.uid(), meta.gid()), (4321, 4322));
    assert_eq!(dest.read().expect("read"), None);
    // The bot (root here, not the owner) can still write, through its named ACL entry.
    dest.write(&artifacts(2)).expect("write after clean");
    if let Some(facl) = getfacl(&dir) {
        assert!(facl.lines().any(|l| l == "user:0:rwx"), "{facl}");
    }
}

#[test]
fn init_refuses_a_reader_equal_to_the_bot() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut opts = init(tmp.path(), false);
    opts.reader_user = opts.bot_user;
    let err = init_acls(&opts).expect_err("same user");
    assert!(err.to_string().contains("reader user must differ"), "{err}");
}
