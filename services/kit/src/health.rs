//! The operations endpoints every service serves: `/healthz` (the process is
//! alive), `/readyz` (its dependencies answer: it can take work) and
//! `/metrics` (Prometheus text format).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tokio_util::sync::CancellationToken;

/// Readiness of a service, as the sum of its components (`postgres`, `nats`,
/// `relay`…). Ready when every registered component is ready.
#[derive(Clone, Default)]
pub struct Health {
    components: Arc<Mutex<BTreeMap<String, bool>>>,
}

impl Health {
    pub fn new() -> Self {
        Self::default()
    }

    /// A health whose `components` start not ready, so `/readyz` says no
    /// until each has reported in.
    pub fn expecting(components: &[&str]) -> Self {
        let health = Self::new();
        for component in components {
            health.set(component, false);
        }
        health
    }

    /// Registers or updates a component's readiness.
    pub fn set(&self, component: &str, ready: bool) {
        self.components
            .lock()
            .expect("health lock")
            .insert(component.to_owned(), ready);
    }

    /// Whether every component is ready, and each one's state.
    pub fn report(&self) -> (bool, BTreeMap<String, bool>) {
        let components = self.components.lock().expect("health lock").clone();
        (components.values().all(|ready| *ready), components)
    }
}

/// Routes for `/healthz`, `/readyz` and `/metrics`.
pub fn routes(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(health)
}

async fn readyz(State(health): State<Health>) -> impl IntoResponse {
    let (ready, components) = health.report();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(serde_json::json!({ "ready": ready, "components": components })),
    )
}

async fn metrics() -> impl IntoResponse {
    let handle = crate::telemetry::prometheus();
    handle.run_upkeep();
    (
        [(header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        handle.render(),
    )
}

/// The health endpoints' address could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    pub addr: std::net::SocketAddr,
    pub source: std::io::Error,
}

/// Binds a service's listener, naming the address when it is taken.
pub async fn bind(addr: std::net::SocketAddr) -> Result<tokio::net::TcpListener, BindError> {
    tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })
}

/// For a service whose only HTTP is `/healthz`, `/readyz` and `/metrics`:
/// binds `addr` now (so a taken port fails the start) and returns the
/// server, to run until `shutdown`.
pub async fn bind_health(
    addr: std::net::SocketAddr,
    health: Health,
    shutdown: CancellationToken,
) -> Result<impl std::future::Future<Output = std::io::Result<()>>, BindError> {
    Ok(serve_http(bind(addr).await?, routes(health), shutdown))
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then lets
/// in-flight requests finish.
pub async fn serve_http(
    listener: tokio::net::TcpListener,
    app: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_only_when_every_component_is() {
        let health = Health::expecting(&["postgres"]);
        assert!(!health.report().0, "postgres has not reported yet");
        health.set("postgres", true);
        health.set("nats", false);
        assert!(!health.report().0);
        health.set("nats", true);
        assert!(health.report().0);
    }
}
