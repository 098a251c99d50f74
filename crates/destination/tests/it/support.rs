//! Shared helpers.

use std::path::Path;
use std::process::Command;

use machine_id_destination::{ArtifactName, Artifacts};

/// A set whose every file names generation `n`, so a reader can tell whether files belong
/// together. `key.pub` and `sshcert` both carry the key id, as real ones do.
pub fn artifacts(n: u64) -> Artifacts {
    let mut a = Artifacts::default();
    for name in ArtifactName::ALL {
        *a.get_mut(name) = format!("{name} of set {n}\n").into_bytes();
    }
    a.key_pub = format!("ecdsa-sha2-nistp256 KEY{n} bot\n").into_bytes();
    a.ssh_cert = format!("ecdsa-sha2-nistp256-cert-v01@openssh.com CERT-FOR-KEY{n}\n").into_bytes();
    a
}

/// The set number a file was written for.
pub fn set_of(bytes: &[u8]) -> Option<u64> {
    let s = std::str::from_utf8(bytes).ok()?;
    let digits: String = s
        .rsplit(|c: char| !c.is_ascii_digit())
        .find(|w| !w.is_empty())?
        .to_owned();
    digits.parse().ok()
}

/// Whether all eight files of `a` belong to one set.
pub fn is_consistent(a: &Artifacts) -> bool {
    let first = set_of(&a.key);
    first.is_some() && a.iter().all(|(_, b)| set_of(b) == first)
}

/// The names in a directory, sorted.
pub fn list(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("list dir")
        .map(|e| {
            e.expect("dir entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    names.sort();
    names
}

/// Runs a command, returning (success, stdout, stderr).
pub fn run(cmd: &mut Command) -> (bool, String, String) {
    let out = cmd.output().expect("spawn command");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Unmounts on drop.
pub struct Mount(pub std::path::PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn set_of_reads_the_trailing_number() {
    assert_eq!(set_of(b"key of set 17\n"), Some(17));
    assert_eq!(set_of(b"ecdsa-sha2-nistp256 KEY3 bot\n"), Some(3));
    assert_eq!(set_of(b"x-cert-v01@openssh.com CERT-FOR-KEY42\n"), Some(42));
    assert!(is_consistent(&artifacts(5)));
}
