//! The backend conformance suite against [`SqliteBackend`] on a file in a temporary directory,
//! and once against the in-memory store through [`run_all`].

use std::sync::Arc;

use machine_id_store::conformance::run_all;
use machine_id_store::{Backend, SqliteBackend};
use tempfile::TempDir;

/// A fresh store in its own temporary directory, removed when the case ends.
async fn setup() -> (Arc<dyn Backend>, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteBackend::open(&dir.path().join("state.db")).unwrap();
    (Arc::new(store), dir)
}

machine_id_store::conformance_tests!(setup);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn in_memory_store_passes_run_all() {
    run_all(|| async {
        (
            Arc::new(SqliteBackend::open_in_memory().unwrap()) as Arc<dyn Backend>,
            (),
        )
    })
    .await;
}
