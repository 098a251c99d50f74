//! Where the bot keeps its own renewable identity: a data directory or memory.
//!
//! # The data directory
//!
//! ```text
//! DATA/                    0700, held with an exclusive flock on DATA/lock
//!   lock                   the flock; two tbots never share one directory
//!   current -> id-7        the identity in force: a symlink to one unit directory
//!   id-7/                  0700, one saved identity, never modified once `current` names it:
//!     key key.pub sshcert tlscert tlscacerts sshcacerts tokenhash     (each 0600)
//!   pending                0600, only while a renewal is under way: the key the renewal
//!                          certifies and the SHA-256 of the tlscert it renews
//! ```
//!
//! `tokenhash` is the SHA-256 of the token that joined, so a changed token means a fresh join.
//!
//! **The identity is replaced as one unit.** A save writes every file into a new directory
//! `id-<n+1>` (each file fsynced, then the directory, then `DATA`), makes a temporary symlink
//! to it and renames that over `current` (one atomic rename), fsyncs `DATA`, and only then
//! removes the old unit. A `kill -9` (or power loss) at any instant therefore leaves
//! `current` naming either the old or the new unit, each whole; a half-written `id-<n+1>`
//! that `current` never named is removed by the next open or save. [`Storage::load`] reads
//! only through `current` and never returns files of two units.
//!
//! **The pending renewal key** makes a renewal retryable byte for byte: before the bot sends
//! a renewal it durably writes the new key with the SHA-256 of the stored certificate it
//! renews ([`Storage::save_pending_key`]); every retry (after a lost answer or a crash) finds
//! it and presents the same certificate with the same key, which the auth server answers
//! idempotently. A save of the new identity removes it; a pending key bound to another
//! certificate is ignored and removed. An idle data directory holds no pending key, so a
//! copy of it replayed by a thief presents a new key and is still caught.
//!
//! **The old flat layout** (the seven files directly in `DATA`, written file by file by
//! earlier versions) is still read when there is no `current`; the next save writes a unit
//! and removes the flat files.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use crate::Result;

mod data_dir;

pub use data_dir::DataDir;

/// The files of a stored identity.
pub mod files {
    use machine_id_destination::ArtifactName;

    /// Private key, PEM.
    pub const KEY: &str = ArtifactName::Key.file_name();
    /// Public key, OpenSSH line.
    pub const KEY_PUB: &str = ArtifactName::KeyPub.file_name();
    /// SSH certificate line.
    pub const SSH_CERT: &str = ArtifactName::SshCert.file_name();
    /// X.509 certificate, PEM.
    pub const TLS_CERT: &str = ArtifactName::TlsCert.file_name();
    /// The cluster's TLS CA certificates, PEM.
    pub const TLS_CA_CERTS: &str = ArtifactName::TlsCaCerts.file_name();
    /// The cluster's SSH CA keys, one line each.
    pub const SSH_CA_CERTS: &str = ArtifactName::SshCaCerts.file_name();
    /// SHA-256 (hex) of the token that joined.
    pub const TOKEN_HASH: &str = "tokenhash";
    /// Held with an exclusive `flock` while a tbot uses the directory.
    pub const LOCK: &str = "lock";
    /// The symlink naming the unit directory of the identity in force.
    pub const CURRENT: &str = "current";
    /// The prefix of unit directories (`id-<n>`).
    pub const UNIT_PREFIX: &str = "id-";
    /// The pending renewal key.
    pub const PENDING: &str = "pending";
    /// The files of one identity, in the order a save writes them.
    pub const IDENTITY: [&str; 7] = [
        TOKEN_HASH,
        TLS_CA_CERTS,
        SSH_CA_CERTS,
        SSH_CERT,
        TLS_CERT,
        KEY_PUB,
        KEY,
    ];
}

/// The largest file of the data directory [`Storage::load`] reads.
const FILE_LIMIT: u64 = 1 << 20;

/// The bot's own identity as stored: text files, all public material except `key`.
/// `Debug` shows no contents.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoredIdentity {
    /// `key`.
    pub key_pem: String,
    /// `key.pub`.
    pub key_pub: String,
    /// `sshcert`.
    pub ssh_cert: String,
    /// `tlscert`.
    pub tls_cert_pem: String,
    /// `tlscacerts`.
    pub tls_ca_pem: String,
    /// `sshcacerts`.
    pub ssh_ca: String,
    /// `tokenhash` (may be empty when the identity was not joined with a token).
    pub token_hash: String,
}

impl std::fmt::Debug for StoredIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoredIdentity").finish_non_exhaustive()
    }
}

/// Where the identity is kept.
#[derive(Debug, Clone)]
pub enum Storage {
    /// A locked data directory.
    Directory(Arc<DataDir>),
    /// Memory (lost when the process exits).
    Memory(Arc<MemoryStorage>),
}

/// Memory storage: the same semantics as a data directory (one identity replaced whole, a
/// pending key bound to its certificate), lost when the process exits.
#[derive(Default)]
pub struct MemoryStorage {
    state: Mutex<MemoryState>,
}

#[derive(Default)]
struct MemoryState {
    identity: Option<StoredIdentity>,
    /// (SHA-256 of the parent tlscert, key PEM).
    pending: Option<(String, String)>,
}

impl std::fmt::Debug for MemoryStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemoryStorage").finish_non_exhaustive()
    }
}

impl MemoryStorage {
    fn lock(&self) -> std::sync::MutexGuard<'_, MemoryState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Storage {
    /// Memory storage, empty.
    pub fn memory() -> Self {
        Self::Memory(Arc::default())
    }

    /// Opens (creating if needed) and locks the data directory at `path`.
    pub fn directory(path: impl Into<PathBuf>) -> Result<Self> {
        Ok(Self::Directory(Arc::new(DataDir::open(path.into())?)))
    }

    /// Where this is, for messages.
    pub fn describe(&self) -> String {
        match self {
            Self::Directory(d) => format!("data directory {}", d.path().display()),
            Self::Memory(_) => "memory".to_string(),
        }
    }

    /// The data directory, if this is one.
    pub fn data_dir(&self) -> Option<&Path> {
        match self {
            Self::Directory(d) => Some(d.path()),
            Self::Memory(_) => None,
        }
    }

    /// The stored identity, if any. Never a mix of two saves.
    pub fn load(&self) -> Result<Option<StoredIdentity>> {
        match self {
            Self::Directory(d) => d.load(),
            Self::Memory(m) => Ok(m.lock().identity.clone()),
        }
    }

    /// Replaces the stored identity as one unit, then drops the pending key (it was for the
    /// identity just replaced). On error the previous identity is still the stored one.
    pub fn save(&self, id: &StoredIdentity) -> Result<()> {
        match self {
            Self::Directory(d) => d.save(id),
            Self::Memory(m) => {
                let mut st = m.lock();
                st.identity = Some(id.clone());
                st.pending = None;
                Ok(())
            }
        }
    }

    /// The pending renewal key (PEM) if there is one for the certificate whose DER hashes
    /// to `parent_sha256` (hex); a pending key for another certificate is removed.
    pub fn load_pending_key(&self, parent_sha256: &str) -> Result<Option<String>> {
        match self {
            Self::Directory(d) => d.load_pending_key(parent_sha256),
            Self::Memory(m) => {
                let mut st = m.lock();
                match st.pending.take() {
                    Some((parent, key)) if parent == parent_sha256 => {
                        st.pending = Some((parent, key.clone()));
                        Ok(Some(key))
                    }
                    _ => Ok(None),
                }
            }
        }
    }

    /// Durably records `key_pem` as the key the renewal of the certificate hashing to
    /// `parent_sha256` certifies. The renewal must not be sent if this fails.
    pub fn save_pending_key(&self, parent_sha256: &str, key_pem: &str) -> Result<()> {
        match self {
            Self::Directory(d) => d.save_pending_key(parent_sha256, key_pem),
            Self::Memory(m) => {
                m.lock().pending = Some((parent_sha256.to_string(), key_pem.to_string()));
                Ok(())
            }
        }
    }

    /// Removes the pending key, if any (after a fresh join, which needs none).
    pub fn clear_pending_key(&self) -> Result<()> {
        match self {
            Self::Directory(d) => d.clear_pending_key(),
            Self::Memory(m) => {
                m.lock().pending = None;
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests;
