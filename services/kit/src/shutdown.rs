//! Graceful shutdown: one [`CancellationToken`] per process, cancelled on
//! SIGTERM or SIGINT. Services stop taking work when it is cancelled, finish
//! or give back what is in flight, then return from `run`.

pub use tokio_util::sync::CancellationToken;

/// Returns a token that is cancelled when the process receives SIGTERM or
/// SIGINT (Ctrl-C). A second signal exits at once, for an operator who does
/// not want to wait for the drain.
pub fn on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let cancel = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown requested: draining");
        cancel.cancel();
        wait_for_signal().await;
        tracing::warn!("second signal: exiting without draining");
        std::process::exit(130);
    });
    token
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    let mut int = signal(SignalKind::interrupt()).expect("SIGINT handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
}

/// Awaits `service`; once `shutdown` is cancelled, gives it at most `drain`
/// to finish. `None` when the drain took too long (the caller exits anyway;
/// unacknowledged work is redelivered elsewhere).
pub async fn drain_within<T>(
    service: impl std::future::Future<Output = T>,
    shutdown: &CancellationToken,
    drain: std::time::Duration,
) -> Option<T> {
    let mut service = std::pin::pin!(service);
    tokio::select! {
        out = &mut service => return Some(out),
        _ = shutdown.cancelled() => {}
    }
    match tokio::time::timeout(drain, service).await {
        Ok(out) => Some(out),
        Err(_) => {
            tracing::warn!(?drain, "drain took too long; exiting anyway");
            None
        }
    }
}
