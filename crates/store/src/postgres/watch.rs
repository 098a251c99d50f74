//! The change feed: one listener connection per backend runs `LISTEN machine_id_kv` and fans
//! the `kv` trigger's notifications out to every watcher whose prefix matches.
//!
//! Why `LISTEN`/`NOTIFY` rather than logical decoding (wal2json): no extension, no
//! `wal_level=logical`, no `REPLICATION` privilege, no replication slot to leak when a server
//! dies; notifications arrive within milliseconds, only for committed transactions, in commit
//! order.
//!
//! - [`Hub::watch`] registers a pending watcher, then sends a `sync` notification through
//!   the pool and returns once the listener has seen it: everything committed before the
//!   call is ahead of the sync in the queue (so not delivered to the new watcher), everything
//!   committed after `watch` returned is behind it, and `LISTEN` is known to be in force.
//! - A notification without a value (too big for a payload) is completed by reading the key;
//!   it is delivered only if the key still has the notified revision (a later notification
//!   covers a newer one).
//! - When the listener connection is lost, or its keepalive query fails, every watcher's
//!   stream ends (consumers reload), [`Hub::watch`] fails with
//!   [`StoreError::Unavailable`], and the listener reconnects in the background with
//!   jittered backoff.
//! - A watcher whose channel is full is closed rather than blocking the others.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use base64::Engine as _;
use futures::StreamExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::AsyncMessage;
use tokio_postgres_rustls::MakeRustlsConnect;

use super::conn::connect_error;
use super::schema::CHANNEL;
use super::{Shared, jitter};
use crate::{Item, Revision, StoreError, WatchEvent, Watcher};

/// How long `watch` waits for its sync notification to come back.
const SYNC_TIMEOUT: Duration = Duration::from_secs(10);

/// Tokens of sync notifications, unique within the process (the pid makes them unique
/// across the servers sharing the channel).
static NEXT_SYNC: AtomicU64 = AtomicU64::new(1);

/// The watchers of one backend and the state of its listener.
pub(super) struct Hub {
    state: Mutex<State>,
    /// Events a watcher may have unread before it is closed.
    buffer: usize,
}

#[derive(Default)]
struct State {
    /// Whether the listener's `LISTEN` is in force.
    up: bool,
    watchers: Vec<Slot>,
    /// Watchers waiting for their sync token, by token.
    pending: HashMap<String, (Slot, oneshot::Sender<()>)>,
}

struct Slot {
    prefix: String,
    tx: mpsc::Sender<WatchEvent>,
}

/// One notification of the `kv` trigger.
#[derive(serde::Deserialize)]
struct Note {
    op: String,
    key: String,
    revision: Revision,
    value: Option<String>,
}

impl Hub {
    pub(super) fn new(buffer: usize) -> Self {
        Self {
            state: Mutex::new(State::default()),
            buffer,
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A watcher of `prefix`, returned once the listener is known to deliver everything
    /// committed from now on.
    pub(super) async fn watch(&self, shared: &Shared, prefix: &str) -> Result<Watcher, StoreError> {
        let (tx, rx) = mpsc::channel(self.buffer);
        let (ready_tx, ready_rx) = oneshot::channel();
        let token = format!(
            "sync {}-{}",
            std::process::id(),
            NEXT_SYNC.fetch_add(1, Ordering::Relaxed)
        );
        {
            let mut state = self.lock();
            if !state.up {
                return Err(feed_down(&shared.settings.described));
            }
            let slot = Slot {
                prefix: prefix.to_owned(),
                tx,
            };
            state.pending.insert(token.clone(), (slot, ready_tx));
        }
        let sent = async {
            let client = shared.client().await?;
            client
                .execute("SELECT pg_notify($1, $2)", &[&CHANNEL, &token])
                .await
                .map_err(|e| shared.query_error("cannot start a watch", &e))
        };
        let result = match sent.await {
            Ok(_) => match tokio::time::timeout(SYNC_TIMEOUT, ready_rx).await {
                Ok(Ok(())) => return Ok(rx),
                Ok(Err(_)) => Err(feed_down(&shared.settings.described)),
                Err(_) => Err(StoreError::Unavailable(format!(
                    "postgresql {}: the change feed did not answer within {SYNC_TIMEOUT:?}",
                    shared.settings.described
                ))),
            },
            Err(e) => Err(e),
        };
        self.lock().pending.remove(&token);
        result
    }

    /// Marks the feed up or down; down ends every watcher's stream.
    fn set_up(&self, up: bool) {
        let mut state = self.lock();
        state.up = up;
        if !up {
            state.watchers.clear();
            state.pending.clear();
        }
    }

    /// Handles one notification payload; `Err` when the feed can no longer be trusted
    /// (a value could not be read).
    async fn dispatch(&self, shared: &Shared, payload: &str) -> Result<(), StoreError> {
        if payload.starts_with("sync ") {
            let mut state = self.lock();
            if let Some((slot, ready)) = state.pending.remove(payload) {
                state.watchers.push(slot);
                // The caller may have given up (timed out); then the slot goes with the
                // next send.
                let _ = ready.send(());
            }
            return Ok(());
        }
        let note: Note = match serde_json::from_str(payload) {
            Ok(note) => note,
            Err(error) => {
                tracing::warn!(%error, "ignoring a malformed store notification");
                return Ok(());
            }
        };
        let event = match note.op.as_str() {
            "delete" => WatchEvent::Delete {
                key: note.key,
                revision: note.revision,
            },
            _ => {
                if !self.wanted(&note.key) {
                    return Ok(());
                }
                let value = match note.value {
                    Some(b64) => match base64::engine::general_purpose::STANDARD.decode(b64) {
                        Ok(value) => value,
                        Err(error) => {
                            tracing::warn!(%error, key = %note.key, "bad value in a store notification");
                            return Ok(());
                        }
                    },
                    None => match fetch(shared, &note.key).await? {
                        Some(item) if item.revision == note.revision => item.value,
                        // Changed or deleted since: a later notification carries it.
                        _ => return Ok(()),
                    },
                };
                WatchEvent::Put(Item {
                    key: note.key,
                    value,
                    revision: note.revision,
                })
            }
        };
        self.fan_out(&event);
        Ok(())
    }

    fn wanted(&self, key: &str) -> bool {
        self.lock()
            .watchers
            .iter()
            .any(|slot| key.starts_with(&slot.prefix))
    }

    /// Sends `event` to the watchers whose prefix matches; drops those gone or full.
    fn fan_out(&self, event: &WatchEvent) {
        let key = event.key();
        let buffer = self.buffer;
        self.lock().watchers.retain(|slot| {
            if !key.starts_with(&slot.prefix) {
                return !slot.tx.is_closed();
            }
            match slot.tx.try_send(event.clone()) {
                Ok(()) => true,
                Err(mpsc::error::TrySendError::Full(_)) => {
                    tracing::warn!(prefix = %slot.prefix, buffer, "store watcher fell behind; closing it");
                    false
                }
                Err(mpsc::error::TrySendError::Closed(_)) => false,
            }
        });
    }
}

fn feed_down(described: &str) -> StoreError {
    StoreError::Unavailable(format!(
        "postgresql {described}: the change feed is down (reconnecting to the database); retry"
    ))
}

/// The item at `key`, read to complete a notification that had no room for the value.
async fn fetch(shared: &Shared, key: &str) -> Result<Option<Item>, StoreError> {
    let client = shared.client().await?;
    let row = client
        .query_opt("SELECT value, revision FROM kv WHERE key = $1", &[&key])
        .await
        .map_err(|e| shared.query_error("cannot read a changed key", &e))?;
    Ok(row.map(|row| Item {
        key: key.to_owned(),
        value: row.get(0),
        revision: row.get(1),
    }))
}

/// Runs the listener until the backend is dropped (the task is aborted): connects, listens,
/// dispatches, and on loss ends every watcher and reconnects. The first connection's
/// outcome goes to `first`.
pub(super) async fn run_listener(
    shared: Arc<Shared>,
    tls: MakeRustlsConnect,
    keepalive: Duration,
    first: oneshot::Sender<Result<(), StoreError>>,
) {
    let mut first = Some(first);
    let mut failures: u32 = 0;
    loop {
        match listen(&shared, tls.clone()).await {
            Ok((client, notes)) => {
                failures = 0;
                shared.hub.set_up(true);
                if let Some(first) = first.take() {
                    let _ = first.send(Ok(()));
                } else {
                    tracing::info!(database = %shared.settings.described, "store change feed reconnected");
                }
                let lost = serve(&shared, &client, notes, keepalive).await;
                shared.hub.set_up(false);
                tracing::warn!(database = %shared.settings.described, error = %lost, "store change feed lost; watchers end, reconnecting");
            }
            Err(e) => {
                if let Some(first) = first.take() {
                    let _ = first.send(Err(e));
                    return;
                }
                failures = failures.saturating_add(1);
                if failures == 1 {
                    tracing::warn!(database = %shared.settings.described, error = %e, "store change feed cannot reconnect yet; retrying");
                }
            }
        }
        let base = Duration::from_millis(100).saturating_mul(1 << failures.min(5));
        tokio::time::sleep(jitter(base.min(Duration::from_secs(2)))).await;
    }
}

/// The listener's client and its notifications (the channel closes when the connection
/// does).
type Listening = (
    tokio_postgres::Client,
    mpsc::UnboundedReceiver<tokio_postgres::Notification>,
);

/// Connects the listener and runs `LISTEN`.
async fn listen(shared: &Shared, tls: MakeRustlsConnect) -> Result<Listening, StoreError> {
    let (client, mut connection) = shared
        .settings
        .config
        .connect(tls)
        .await
        .map_err(|e| connect_error(&shared.settings, &e))?;
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            match message {
                Ok(AsyncMessage::Notification(note)) => {
                    if tx.send(note).is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(error) => {
                    tracing::debug!(%error, "store listener connection ended");
                    return;
                }
            }
        }
    });
    client
        .batch_execute(&format!("LISTEN {CHANNEL}"))
        .await
        .map_err(|e| shared.query_error("cannot LISTEN", &e))?;
    Ok((client, rx))
}

/// Dispatches notifications until the connection is lost or a keepalive fails; returns why.
async fn serve(
    shared: &Shared,
    client: &tokio_postgres::Client,
    mut notes: mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    keepalive: Duration,
) -> StoreError {
    let mut tick = tokio::time::interval(keepalive);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            note = notes.recv() => match note {
                Some(note) => {
                    if let Err(e) = shared.hub.dispatch(shared, note.payload()).await {
                        return e;
                    }
                }
                None => return feed_down(&shared.settings.described),
            },
            _ = tick.tick() => {
                match tokio::time::timeout(keepalive, client.simple_query("SELECT 1")).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return shared.query_error("keepalive failed", &e),
                    Err(_) => return StoreError::Unavailable(format!(
                        "postgresql {}: the listener's keepalive got no answer within {keepalive:?}",
                        shared.settings.described
                    )),
                }
            }
        }
    }
}
