//! Machine ID destinations: where `tbot` puts the short-lived certificates and the config
//! that OpenSSH and TLS clients read.
//!
//! - [`Artifacts`] is the set of eight files a destination holds (`key`, `key.pub`,
//!   `sshcert`, `sshcacerts`, `tlscert`, `tlscacerts`, `known_hosts`, `ssh_config`), named by
//!   [`ArtifactName`]. Its `Debug` never prints contents.
//! - [`Destination`] is the writer trait: [`write`](Destination::write) replaces the whole
//!   set, [`read`](Destination::read) returns a consistent set or `None` when empty.
//! - [`MemoryDestination`] keeps the set in memory for services that embed the bot.
//! - [`DirectoryDestination`] writes plain files: 0600, the directory 0700, the set staged
//!   and fsynced before anything old is replaced, with a [`SymlinkPolicy`] (`secure` uses
//!   `openat2(2)` with `RESOLVE_NO_SYMLINKS` and works relative to the opened directory). Its
//!   doc states exactly what readers can and cannot observe.
//! - [`write_private_file`] is the one atomic writer (0600, fsync, rename) for private files
//!   kept outside a destination: the auth server's admin identity, the bot's data directory
//!   and `tctl auth sign`'s host key. [`ArtifactName::file_name`] is the one definition of an
//!   identity directory's file names.
//! - [`init_acls`] is `tbot init`: owner and POSIX ACLs so a reader user can read the files.
//! - [`known_hosts`] and [`ssh_config`] render the two text artifacts from
//!   [`HostCaKey`]s and [`SshConfigParams`].
//!
//! Every fallible call returns [`DestinationError`], whose messages name the path and the fix.
//! The crate emits `tracing` events with paths and generations, never file contents.
//!
//! ```
//! use machine_id_destination::{Artifacts, Destination, DirectoryDestination, SymlinkPolicy};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let tmp = tempfile::tempdir()?;
//! let dest = DirectoryDestination::new(tmp.path().join("machine-id"))
//!     .with_symlinks(SymlinkPolicy::Secure);
//! assert!(dest.read()?.is_none());
//!
//! let artifacts = Artifacts {
//!     key: b"-----BEGIN PRIVATE KEY-----\n...\n".to_vec(),
//!     key_pub: b"ecdsa-sha2-nistp256 AAAA...\n".to_vec(),
//!     ..Artifacts::default()
//! };
//! dest.write(&artifacts)?;
//! assert_eq!(dest.read()?, Some(artifacts));
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

mod acl;
mod artifacts;
mod directory;
mod error;
mod memory;
mod private_file;
mod templates;

pub use acl::{InitAcls, UnixUser, init_acls};
pub use artifacts::{ArtifactName, Artifacts};
pub use directory::{DirectoryDestination, GENERATION_FILE, SymlinkPolicy};
pub use error::DestinationError;
pub use memory::MemoryDestination;
pub use private_file::write_private_file;
pub use templates::{HostCaKey, SshConfigParams, known_hosts, ssh_config};

/// Somewhere a bot keeps its output [`Artifacts`], replaced whole on every renewal.
///
/// The trait is synchronous: writes are a handful of small files plus fsyncs, done every few
/// minutes, and the directory implementation relies on blocking syscalls (`openat2`,
/// `flock`, `renameat`) anyway. Async callers wrap calls in `tokio::task::spawn_blocking`.
/// Implementations are `Send + Sync` so one can be shared between the bot and its readers.
pub trait Destination: Send + Sync {
    /// Replaces the whole set with `artifacts`. On error the previous set is left whole
    /// (see each implementation for the exact guarantee).
    fn write(&self, artifacts: &Artifacts) -> Result<(), DestinationError>;

    /// The current set, or `None` when nothing was written yet. Never returns files of two
    /// different writes mixed together.
    fn read(&self) -> Result<Option<Artifacts>, DestinationError>;

    /// Finishes a write that a writer killed part-way left behind, so the set is whole again;
    /// `Ok(true)` when there was one. The default (for destinations whose writes cannot be
    /// torn, such as memory) does nothing.
    fn recover(&self) -> Result<bool, DestinationError> {
        Ok(false)
    }
}

impl<D: Destination + ?Sized> Destination for std::sync::Arc<D> {
    fn write(&self, artifacts: &Artifacts) -> Result<(), DestinationError> {
        (**self).write(artifacts)
    }

    fn read(&self) -> Result<Option<Artifacts>, DestinationError> {
        (**self).read()
    }

    fn recover(&self) -> Result<bool, DestinationError> {
        (**self).recover()
    }
}
