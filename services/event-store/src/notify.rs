//! Wake-ups on commit. Subscribers and the relay wait on the log's head (the
//! highest committed position) as this process knows it: moved by this
//! process's writer after each commit, and by a poll of the log for commits
//! made by other event-store replicas. Appends commit in position order, so
//! every position up to the head is readable; a head that lags only delays
//! readers, never makes them miss an event, because they read the log
//! itself up to it.
//!
//! Postgres `NOTIFY` would wake other replicas sooner, but it costs every
//! commit about a tenth of its time (the notification queue and signalling
//! the listeners); a cheap poll of `max(position)` costs nothing per commit.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::read::Reader;

/// How often the head is polled for other replicas' commits.
pub const HEAD_POLL: Duration = Duration::from_millis(100);

/// The log's head, moving forward on commits.
pub fn channel() -> (Arc<watch::Sender<u64>>, watch::Receiver<u64>) {
    let (tx, rx) = watch::channel(0);
    (Arc::new(tx), rx)
}

/// Moves the head to `position` unless it is there already; wakes the
/// readers when it moved.
pub fn advance(head: &watch::Sender<u64>, position: u64) {
    head.send_if_modified(|head| {
        let moved = position > *head;
        if moved {
            *head = position;
        }
        moved
    });
}

/// Polls the log's head until `shutdown`, moving `head` with it.
pub async fn watch_head(
    reader: Reader,
    head: Arc<watch::Sender<u64>>,
    shutdown: CancellationToken,
) {
    while !shutdown.is_cancelled() {
        match reader.head().await {
            Ok(position) => advance(&head, position),
            Err(error) => tracing::debug!(%error, "cannot read the log head"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(HEAD_POLL) => {}
        }
    }
}
