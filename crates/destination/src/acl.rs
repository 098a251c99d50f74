//! `tbot init`: owner and POSIX ACLs so a reader user can read a destination.

use std::path::PathBuf;

use rustix::fs::{AtFlags, FileType, FlockOperation, XattrFlags};
use rustix::io::Errno;

use crate::directory::{GENERATION_FILE, OpenDir};
use crate::{ArtifactName, DestinationError, SymlinkPolicy};

/// A local account: user id and primary group id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnixUser {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
}

impl UnixUser {
    /// Looks up a user by name, or takes a numeric uid (with the user's primary group when
    /// the system knows the uid, else a gid equal to the uid).
    pub fn lookup(name: &str) -> Result<Self, DestinationError> {
        let unknown = || DestinationError::UnknownUser {
            kind: "user",
            name: name.to_owned(),
        };
        if let Ok(uid) = name.parse::<u32>() {
            let user = nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                .ok()
                .flatten();
            return Ok(Self {
                uid,
                gid: user.map_or(uid, |u| u.gid.as_raw()),
            });
        }
        let user = nix::unistd::User::from_name(name)
            .ok()
            .flatten()
            .ok_or_else(unknown)?;
        Ok(Self {
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }

    /// Parses `tbot init --owner`: `user:group` or `user` (then the user's primary group);
    /// names or numeric ids.
    pub fn parse_owner(spec: &str) -> Result<Self, DestinationError> {
        let (user, group) = match spec.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (spec, None),
        };
        let mut owner = Self::lookup(user)?;
        if let Some(group) = group {
            owner.gid = match group.parse::<u32>() {
                Ok(gid) => gid,
                Err(_) => nix::unistd::Group::from_name(group)
                    .ok()
                    .flatten()
                    .ok_or_else(|| DestinationError::UnknownUser {
                        kind: "group",
                        name: group.to_owned(),
                    })?
                    .gid
                    .as_raw(),
            };
        }
        Ok(owner)
    }
}

/// What `tbot init --destination-dir --bot-user --reader-user [--owner] [--clean]` asks for.
#[derive(Debug, Clone)]
pub struct InitAcls {
    /// The destination directory; created 0700 if missing.
    pub destination_dir: PathBuf,
    /// The user tbot runs as (`--bot-user`): may create and replace files.
    pub bot_user: UnixUser,
    /// The user that consumes the outputs (`--reader-user`): may read them, nothing more.
    pub reader_user: UnixUser,
    /// The directory's owner (`--owner`); the bot user when `None`.
    pub owner: Option<UnixUser>,
    /// Remove the files of an existing set first (`--clean`).
    pub clean: bool,
    /// How to treat symlinks in the path.
    pub symlinks: SymlinkPolicy,
}

const ACL_USER_OBJ: u16 = 0x01;
const ACL_USER: u16 = 0x02;
const ACL_GROUP_OBJ: u16 = 0x04;
const ACL_MASK: u16 = 0x10;
const ACL_OTHER: u16 = 0x20;
const ACL_UNDEFINED_ID: u32 = u32::MAX;
const POSIX_ACL_XATTR_VERSION: u32 = 2;

/// One ACL entry: tag, permission bits (r=4, w=2, x=1), id for named entries.
type Entry = (u16, u16, u32);

/// Encodes entries in the Linux `system.posix_acl_*` xattr format (little-endian version 2
/// header, then 8-byte entries sorted by tag and id, as the kernel requires).
fn encode_acl(entries: &[Entry]) -> Vec<u8> {
    let mut sorted = entries.to_vec();
    sorted.sort_by_key(|&(tag, _, id)| (tag, id));
    let mut out = Vec::with_capacity(4 + 8 * sorted.len());
    out.extend_from_slice(&POSIX_ACL_XATTR_VERSION.to_le_bytes());
    for (tag, perm, id) in sorted {
        out.extend_from_slice(&tag.to_le_bytes());
        out.extend_from_slice(&perm.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}

/// The directory's access ACL: owner rwx, bot rwx (when not the owner), reader r-x.
fn dir_access_acl(owner: u32, bot: u32, reader: u32) -> Vec<Entry> {
    let mut e = vec![
        (ACL_USER_OBJ, 7, ACL_UNDEFINED_ID),
        (ACL_USER, 5, reader),
        (ACL_GROUP_OBJ, 0, ACL_UNDEFINED_ID),
        (ACL_MASK, 7, ACL_UNDEFINED_ID),
        (ACL_OTHER, 0, ACL_UNDEFINED_ID),
    ];
    if bot != owner {
        e.push((ACL_USER, 7, bot));
    }
    e
}

/// What files get: the creator (the bot) rw, reader r, nobody else. Used as the directory's
/// default ACL (inherited by every new file) and set on files already present.
fn file_acl(reader: u32) -> Vec<Entry> {
    vec![
        (ACL_USER_OBJ, 6, ACL_UNDEFINED_ID),
        (ACL_USER, 4, reader),
        (ACL_GROUP_OBJ, 0, ACL_UNDEFINED_ID),
        (ACL_MASK, 4, ACL_UNDEFINED_ID),
        (ACL_OTHER, 0, ACL_UNDEFINED_ID),
    ]
}

fn set_acl(
    fd: impl rustix::fd::AsFd,
    name: &str,
    entries: &[Entry],
    path: &std::path::Path,
) -> Result<(), DestinationError> {
    rustix::fs::fsetxattr(fd, name, &encode_acl(entries), XattrFlags::empty()).map_err(|e| match e {
        Errno::NOTSUP => DestinationError::Io {
            op: "setting ACL on",
            path: path.to_path_buf(),
            source: std::io::Error::other(
                "the filesystem does not support POSIX ACLs (mount it with acl, or pick a destination on one that does)",
            ),
        },
        e => DestinationError::from_errno("setting ACL on", path, e),
    })
}

/// Prepares a destination for a bot user and a reader user, like `tbot init`.
///
/// Creates the directory (0700) if missing; with `clean`, removes the files of an existing
/// set (and staging leftovers); makes `owner` (default: the bot user) own the directory; sets
/// its access ACL (`user::rwx`, `user:<bot>:rwx` when the bot is not the owner,
/// `user:<reader>:r-x`, `group::---`, `mask::rwx`, `other::---`) and its default ACL
/// (`user::rw-`, `user:<reader>:r--`, `group::---`, `mask::r--`, `other::---`), which every
/// file the bot writes inherits (a [`DirectoryDestination`](crate::DirectoryDestination)
/// creates files 0640 in such a directory, so the mask is `r--`: the reader can read and
/// nobody but the bot can write). Files already present are given to the bot user and the
/// same file ACL.
///
/// The reader still needs search (`x`) permission on every parent directory; this function
/// does not change parents. Needs privileges to `chown` (normally root), and a filesystem
/// with POSIX ACLs.
pub fn init_acls(init: &InitAcls) -> Result<(), DestinationError> {
    let path = &init.destination_dir;
    if init.reader_user.uid == init.bot_user.uid {
        return Err(DestinationError::InvalidInput {
            what: "reader user",
            reason: "the reader user must differ from the bot user".into(),
        });
    }
    let Some(dir) = OpenDir::open(path, init.symlinks, true)? else {
        return Err(DestinationError::NotADirectory { path: path.clone() });
    };
    rustix::fs::flock(&dir.fd, FlockOperation::LockExclusive)
        .map_err(|e| DestinationError::from_errno("locking", path, e))?;
    let owner = init.owner.unwrap_or(init.bot_user);
    let names = ArtifactName::ALL
        .iter()
        .map(|n| n.file_name())
        .chain([GENERATION_FILE]);
    if init.clean {
        dir.remove_temps()?;
        for name in names.clone() {
            match rustix::fs::unlinkat(&dir.fd, name, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(e) => {
                    return Err(DestinationError::from_errno(
                        "removing",
                        &path.join(name),
                        e,
                    ));
                }
            }
        }
    }
    rustix::fs::fchown(
        &dir.fd,
        Some(rustix::fs::Uid::from_raw(owner.uid)),
        Some(rustix::fs::Gid::from_raw(owner.gid)),
    )
    .map_err(|e| DestinationError::from_errno("changing the owner of", path, e))?;
    set_acl(
        &dir.fd,
        "system.posix_acl_access",
        &dir_access_acl(owner.uid, init.bot_user.uid, init.reader_user.uid),
        path,
    )?;
    set_acl(
        &dir.fd,
        "system.posix_acl_default",
        &file_acl(init.reader_user.uid),
        path,
    )?;
    for name in names {
        let file_path = path.join(name);
        let Some(file) = dir.open_file(name)? else {
            continue;
        };
        let st = rustix::fs::fstat(&file)
            .map_err(|e| DestinationError::from_errno("inspecting", &file_path, e))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(DestinationError::NotAFile { path: file_path });
        }
        rustix::fs::fchown(
            &file,
            Some(rustix::fs::Uid::from_raw(init.bot_user.uid)),
            Some(rustix::fs::Gid::from_raw(init.bot_user.gid)),
        )
        .map_err(|e| DestinationError::from_errno("changing the owner of", &file_path, e))?;
        set_acl(
            &file,
            "system.posix_acl_access",
            &file_acl(init.reader_user.uid),
            &file_path,
        )?;
    }
    tracing::info!(
        path = %path.display(),
        owner = owner.uid,
        bot_user = init.bot_user.uid,
        reader_user = init.reader_user.uid,
        clean = init.clean,
        "initialized destination owner and ACLs"
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acl_encoding_is_the_linux_xattr_format() {
        let bytes = encode_acl(&file_acl(1000));
        assert_eq!(bytes.len(), 4 + 5 * 8);
        assert_eq!(&bytes[..4], &[2, 0, 0, 0]);
        // user_obj first, then the named user with its id.
        assert_eq!(&bytes[4..12], &[1, 0, 6, 0, 0xff, 0xff, 0xff, 0xff]);
        assert_eq!(&bytes[12..20], &[2, 0, 4, 0, 0xe8, 0x03, 0, 0]);
        assert_eq!(&bytes[36..44], &[0x20, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]);
    }

    #[test]
    fn named_users_are_sorted_and_owner_bot_not_duplicated() {
        let e = dir_access_acl(0, 0, 5);
        assert_eq!(e.iter().filter(|(t, _, _)| *t == ACL_USER).count(), 1);
        let bytes = encode_acl(&dir_access_acl(0, 9, 5));
        // Second and third entries are the named users 5 then 9.
        assert_eq!(&bytes[12..20], &[2, 0, 5, 0, 5, 0, 0, 0]);
        assert_eq!(&bytes[20..28], &[2, 0, 7, 0, 9, 0, 0, 0]);
    }

    #[test]
    fn owner_specs() {
        assert_eq!(
            UnixUser::parse_owner("0:0").ok(),
            Some(UnixUser { uid: 0, gid: 0 })
        );
        assert_eq!(
            UnixUser::parse_owner("root").ok(),
            Some(UnixUser { uid: 0, gid: 0 })
        );
        assert_eq!(
            UnixUser::parse_owner("54321").ok(),
            Some(UnixUser {
                uid: 54321,
                gid: 54321
            })
        );
        let e = UnixUser::lookup("no-such-user-xyz").expect_err("unknown");
        assert_eq!(
            e.to_string(),
            "no such user `no-such-user-xyz` on this system; create it or pass a numeric id"
        );
        assert!(UnixUser::parse_owner("root:no-such-group-xyz").is_err());
    }
}
