//! Wake-ups on commit. Subscribers and the relay wait on a generation counter
//! that moves whenever new events may be readable: bumped by this process's
//! writer after each commit, and by a poll of the log's head for commits made
//! by other event-store replicas. A wake-up only says "look again"; readers
//! always read the log itself, so a missed wake-up delays, never loses.
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

/// A generation counter that moves on commits.
pub fn channel() -> (Arc<watch::Sender<u64>>, watch::Receiver<u64>) {
    let (tx, rx) = watch::channel(0);
    (Arc::new(tx), rx)
}

/// Polls the log's head until `shutdown`, bumping `wake` when it moved.
pub async fn watch_head(
    reader: Reader,
    wake: Arc<watch::Sender<u64>>,
    shutdown: CancellationToken,
) {
    let mut last = 0;
    while !shutdown.is_cancelled() {
        match reader.head().await {
            Ok(head) if head != last => {
                last = head;
                wake.send_modify(|generation| *generation += 1);
            }
            Ok(_) => {}
            Err(error) => tracing::debug!(%error, "cannot read the log head"),
        }
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tokio::time::sleep(HEAD_POLL) => {}
        }
    }
}
