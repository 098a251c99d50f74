//! The cluster's CAs as this server uses them right now: the key material with its rotation
//! status, the signer built from it, and the auth port's TLS material, all replaced together
//! whenever the stored CAs change (a rotation phase made here or on another server).
//!
//! **Invariant:** what is installed only moves forward: a record is installed only when its
//! store revision is higher than the installed one, so a late echo of an older phase (the
//! change feed delivering this server's own write after it was installed) never undoes a
//! newer one.

use std::sync::{Arc, RwLock};

use machine_id_mint::{CaKeys, CaSigner};
use machine_id_store::Revision;
use tokio::sync::watch;

use crate::error::Result;
use crate::tls::ServerTls;

/// The CAs in use; see the module documentation.
#[derive(Debug)]
pub(crate) struct Authorities {
    current: RwLock<Loaded>,
    tls: Arc<ServerTls>,
    /// Moved after every install, for the CA watch streams and the admin identity.
    changed: watch::Sender<u64>,
}

#[derive(Debug, Clone)]
struct Loaded {
    revision: Revision,
    keys: Arc<CaKeys>,
    signer: Arc<CaSigner>,
}

impl Authorities {
    /// The CAs of `keys`, stored at `revision`, with the TLS material built from them.
    pub(crate) fn new(
        revision: Revision,
        keys: CaKeys,
        signer: Arc<CaSigner>,
        tls: Arc<ServerTls>,
    ) -> Self {
        Self {
            current: RwLock::new(Loaded {
                revision,
                keys: Arc::new(keys),
                signer,
            }),
            tls,
            changed: watch::channel(0).0,
        }
    }

    fn loaded(&self) -> Loaded {
        self.current
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The signer of the installed CAs.
    pub(crate) fn signer(&self) -> Arc<CaSigner> {
        self.loaded().signer
    }

    /// The installed key material, with each CA's rotation status.
    pub(crate) fn keys(&self) -> Arc<CaKeys> {
        self.loaded().keys
    }

    /// The store revision of the installed key material.
    pub(crate) fn revision(&self) -> Revision {
        self.loaded().revision
    }

    /// Installs `keys`, stored at `revision`, unless something as new is installed already:
    /// builds the signer, re-signs the server certificate and replaces the client roots, then
    /// tells the subscribers. `true` when it was installed.
    pub(crate) fn install(&self, revision: Revision, keys: CaKeys) -> Result<bool> {
        if revision <= self.revision() {
            return Ok(false);
        }
        let signer = Arc::new(keys.signer()?);
        {
            let mut current = self.current.write().unwrap_or_else(|p| p.into_inner());
            if revision <= current.revision {
                return Ok(false);
            }
            self.tls.update(&signer)?;
            *current = Loaded {
                revision,
                keys: Arc::new(keys),
                signer,
            };
        }
        crate::revocation::bump(&self.changed);
        tracing::info!(revision, "certificate authorities reloaded");
        Ok(true)
    }

    /// A receiver that moves after every install.
    pub(crate) fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }
}
