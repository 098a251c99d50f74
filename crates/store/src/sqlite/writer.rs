//! The SQLite store's writer: one thread owns the write connection and commits the writes
//! that queued up while it was busy **together**, in one transaction and one fsync (group
//! commit).
//!
//! Every write ([`Backend`](crate::Backend) write methods, event appends, and
//! [`Backend::write_with_events`](crate::Backend::write_with_events)) is a request on one
//! queue. The thread takes the first request, then every request already waiting (at most
//! [`MAX_BATCH`]), and applies them in queue order inside one `BEGIN IMMEDIATE` transaction,
//! each under its own savepoint:
//!
//! - a request whose condition fails (a compare-and-swap conflict, a create of an existing
//!   key) rolls back its savepoint only, and gets its own error; the others go on;
//! - each request that changes items takes the next revision, exactly as if it had been
//!   committed alone, so revisions still increase strictly per write;
//! - the transaction commits once (`synchronous=FULL`: the WAL is fsynced), and only then are
//!   the watchers told and the callers answered. If the commit fails, every request of the
//!   batch gets the error and nothing of it is durable.
//!
//! An idle writer commits a lone request at once: there is no waiting for company, so a
//! single writer's latency is one commit as before, and under load the batch grows by itself
//! to whatever arrived during the previous fsync.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc;

use rusqlite::TransactionBehavior;
use tokio::sync::oneshot;

use super::{Inner, lock};
use crate::{Op, Revision, StoreError, StoredEvent, WatchEvent};

/// The most requests one transaction commits.
pub(super) const MAX_BATCH: usize = 512;

/// One write waiting for the writer thread.
struct Request {
    ops: Vec<Op>,
    events: Vec<StoredEvent>,
    reply: oneshot::Sender<Result<Revision, StoreError>>,
}

/// The sending side of the writer's queue. Dropping it (with the last store handle) lets the
/// thread finish what is queued, and waits until it has exited and released its connections,
/// so that the last close checkpoints the WAL into the database file as before: after a clean
/// stop, the database file alone holds the whole store (and no stale `-wal` is left beside it
/// to be replayed onto a file restored from a backup).
pub(super) struct Queue {
    tx: Option<mpsc::Sender<Request>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for Queue {
    fn drop(&mut self) {
        drop(self.tx.take());
        if let Some(thread) = self.thread.take()
            && thread.join().is_err()
        {
            tracing::error!("the sqlite store's writer thread panicked");
        }
    }
}

impl Queue {
    /// Starts the writer thread for `inner`.
    pub(super) fn start(inner: Arc<Inner>) -> Result<Self, StoreError> {
        let (tx, rx) = mpsc::channel::<Request>();
        let location = inner.location.clone();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(inner, &rx))
            .map_err(|e| {
                StoreError::Backend(format!(
                    "sqlite store {location}: cannot start the writer thread: {e}"
                ))
            })?;
        Ok(Self {
            tx: Some(tx),
            thread: Some(thread),
        })
    }

    /// Queues `ops` and `events` as one write and waits until it is durable (or failed).
    pub(super) async fn write(
        &self,
        location: &str,
        ops: Vec<Op>,
        events: Vec<StoredEvent>,
    ) -> Result<Revision, StoreError> {
        let (reply, answer) = oneshot::channel();
        let stopped = || {
            StoreError::Backend(format!(
                "sqlite store {location}: the writer thread stopped (a bug: see the log for its panic); restart the server"
            ))
        };
        self.tx
            .as_ref()
            .ok_or_else(stopped)?
            .send(Request { ops, events, reply })
            .map_err(|_| stopped())?;
        answer.await.map_err(|_| stopped())?
    }
}

fn run(inner: Arc<Inner>, rx: &mpsc::Receiver<Request>) {
    while let Ok(first) = rx.recv() {
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(request) => batch.push(request),
                Err(_) => break,
            }
        }
        let (writes, replies): (Vec<_>, Vec<_>) = batch
            .into_iter()
            .map(|r| ((r.ops, r.events), r.reply))
            .unzip();
        let outcomes = inner.write_batch(writes);
        for (reply, outcome) in replies.into_iter().zip(outcomes) {
            // A caller that stopped waiting learns nothing; the write stands.
            let _ = reply.send(outcome);
        }
    }
    tracing::debug!(location = %inner.location, "sqlite store writer stopped");
    // `inner` (with the connections, if this was the last reference) is released here,
    // before the store's drop returns from joining this thread.
    drop(inner);
}

/// The same error for every member of a batch that failed as a whole.
fn copy(e: &StoreError) -> StoreError {
    match e {
        StoreError::NotFound { key } => StoreError::NotFound { key: key.clone() },
        StoreError::AlreadyExists { key } => StoreError::AlreadyExists { key: key.clone() },
        StoreError::Conflict { key } => StoreError::Conflict { key: key.clone() },
        StoreError::Unavailable(m) => StoreError::Unavailable(m.clone()),
        StoreError::Backend(m) => StoreError::Backend(m.clone()),
    }
}

impl Inner {
    /// Applies `writes` in one transaction, each under its own savepoint and (if it changes
    /// items) at its own revision, commits once, tells the watchers, and returns each write's
    /// outcome in order.
    pub(super) fn write_batch(
        &self,
        writes: Vec<(Vec<Op>, Vec<StoredEvent>)>,
    ) -> Vec<Result<Revision, StoreError>> {
        let n = writes.len();
        let all = |e: StoreError| (0..n).map(|_| Err(copy(&e))).collect();
        let mut conn = lock(&self.writer);
        let mut tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(e) => return all(self.err("cannot begin a write")(e)),
        };
        let mut current: Revision = match tx
            .prepare_cached("SELECT value FROM meta WHERE name = 'revision'")
            .and_then(|mut s| s.query_row([], |row| row.get(0)))
        {
            Ok(r) => r,
            Err(e) => return all(self.err("cannot read the revision")(e)),
        };
        let start = current;
        let mut outcomes = Vec::with_capacity(n);
        let mut changes: Vec<WatchEvent> = Vec::new();
        for (ops, events) in writes {
            if ops.is_empty() && events.is_empty() {
                outcomes.push(Ok(current));
                continue;
            }
            let revision = if ops.is_empty() {
                current
            } else {
                match current.checked_add(1) {
                    Some(r) => r,
                    None => {
                        outcomes.push(Err(StoreError::Backend(format!(
                            "sqlite store {}: revision overflow",
                            self.location
                        ))));
                        continue;
                    }
                }
            };
            let mut sp = match tx.savepoint() {
                Ok(sp) => sp,
                Err(e) => return all(self.err("cannot begin a write")(e)),
            };
            let applied = (|| {
                let mut out = Vec::with_capacity(ops.len());
                for op in ops {
                    out.push(self.apply(&sp, op, revision)?);
                }
                for event in &events {
                    self.insert_event(&sp, event)?;
                }
                Ok::<_, StoreError>(out)
            })();
            match applied {
                Ok(out) => {
                    if let Err(e) = sp.commit() {
                        return all(self.err("cannot write")(e));
                    }
                    current = revision;
                    changes.extend(out);
                    outcomes.push(Ok(revision));
                }
                Err(e) => {
                    // Roll this write back and release its savepoint; the batch goes on.
                    sp.set_drop_behavior(rusqlite::DropBehavior::Rollback);
                    if let Err(e2) = sp.finish() {
                        return all(self.err("cannot roll back a failed write")(e2));
                    }
                    outcomes.push(Err(e));
                }
            }
        }
        if current != start
            && let Err(e) = tx
                .prepare_cached("UPDATE meta SET value = ?1 WHERE name = 'revision'")
                .and_then(|mut s| s.execute([current]))
        {
            return all(self.err("cannot write")(e));
        }
        if let Err(e) = tx.commit() {
            return all(self.err("cannot commit")(e));
        }
        self.commits.fetch_add(1, Ordering::Relaxed);
        tracing::trace!(revision = current, writes = n, "sqlite store committed");
        // Still holding the writer: events reach watchers in commit order.
        self.notify(&changes);
        drop(conn);
        outcomes
    }
}
