//! The in-memory destination, for services that embed the bot.

use std::sync::{Arc, PoisonError, RwLock};

use crate::{Artifacts, Destination, DestinationError};

/// A destination held in memory.
///
/// A write swaps in a whole new set under a lock, so a reader always gets one complete set
/// (the snapshot is an `Arc`, so [`snapshot`](Self::snapshot) does not copy). Clones share the
/// same storage: give one clone to the bot and keep another to read from.
#[derive(Debug, Clone, Default)]
pub struct MemoryDestination {
    current: Arc<RwLock<Option<Arc<Artifacts>>>>,
}

impl MemoryDestination {
    /// An empty destination.
    pub fn new() -> Self {
        Self::default()
    }

    /// The current set without copying it, or `None` before the first write.
    pub fn snapshot(&self) -> Option<Arc<Artifacts>> {
        self.current
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Destination for MemoryDestination {
    fn write(&self, artifacts: &Artifacts) -> Result<(), DestinationError> {
        let next = Arc::new(artifacts.clone());
        *self.current.write().unwrap_or_else(PoisonError::into_inner) = Some(next);
        tracing::debug!(destination = "memory", "wrote artifacts");
        Ok(())
    }

    fn read(&self) -> Result<Option<Artifacts>, DestinationError> {
        Ok(self.snapshot().map(|a| (*a).clone()))
    }
}
