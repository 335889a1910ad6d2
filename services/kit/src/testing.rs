//! Test helpers: every test gets its own Postgres database and its own
//! JetStream stream and subject prefix, on the real servers, so tests run in
//! parallel and leave nothing behind.
//!
//! The servers come from the environment `make test` prepares
//! (`infra/local/services.sh`): `CALLFLOW_TEST_DATABASE_URL` (any database
//! on a server where the user may create databases) and `NATS_URL`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::bus::Bus;
use crate::config::Common;
use crate::db::url_with_database;

/// A database created for one test and dropped when the value is dropped.
pub struct TestDb {
    pub url: String,
    name: String,
    admin_url: String,
}

fn admin_url() -> String {
    std::env::var("CALLFLOW_TEST_DATABASE_URL")
        .or_else(|_| std::env::var("DATABASE_URL"))
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl TestDb {
    /// Creates an empty database with a random name. Databases left behind
    /// by killed test runs (older than two hours) are dropped on the way.
    pub async fn create() -> Self {
        let admin_url = admin_url();
        let admin = crate::db::connect(&admin_url)
            .await
            .unwrap_or_else(|e| panic!("test Postgres at {admin_url} is not reachable ({e}); run `make test`, which starts it"));
        let stale = unix_now().saturating_sub(2 * 3600);
        for row in admin
            .query(
                "SELECT datname FROM pg_database WHERE datname LIKE 'cf\\_test\\_%'",
                &[],
            )
            .await
            .expect("list test databases")
        {
            let name: String = row.get(0);
            let created = name.split('_').nth(2).and_then(|t| t.parse::<u64>().ok());
            if created.is_some_and(|t| t < stale) {
                let _ = admin
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await;
            }
        }
        let name = format!("cf_test_{}_{:08x}", unix_now(), rand::random::<u32>());
        admin
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create test database");
        Self {
            url: url_with_database(&admin_url, &name),
            name,
            admin_url,
        }
    }

    /// A fresh connection to this database.
    pub async fn connect(&self) -> tokio_postgres::Client {
        crate::db::connect(&self.url)
            .await
            .expect("connect to test database")
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (admin_url, name) = (self.admin_url.clone(), self.name.clone());
        // Drop runs outside async; use a small runtime on a plain thread.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                if let Ok(admin) = crate::db::connect(&admin_url).await {
                    let _ = admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                }
            });
            Ok::<_, std::io::Error>(())
        })
        .join();
    }
}

/// A JetStream stream and subject prefix for one test, deleted on drop.
pub struct TestBus {
    pub nats_url: String,
    pub stream: String,
    pub prefix: String,
}

impl TestBus {
    pub fn new() -> Self {
        Self::on(&std::env::var("NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".into()))
    }

    /// Like [`TestBus::new`], on a NATS server of the test's own.
    pub fn on(nats_url: &str) -> Self {
        let id = format!("{:08x}", rand::random::<u32>());
        Self {
            nats_url: nats_url.to_owned(),
            stream: format!("CFTEST_{id}"),
            prefix: format!("cftest{id}.evt"),
        }
    }

    pub async fn connect(&self) -> Bus {
        Bus::connect(&common("", self), "test")
            .await
            .expect("connect to NATS")
    }
}

impl Default for TestBus {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for TestBus {
    fn drop(&mut self) {
        let (url, stream) = (self.nats_url.clone(), self.stream.clone());
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let connect = async_nats::ConnectOptions::new()
                    .connection_timeout(Duration::from_secs(2))
                    .connect(&url);
                if let Ok(Ok(client)) = tokio::time::timeout(Duration::from_secs(3), connect).await
                {
                    let js = async_nats::jetstream::new(client);
                    let _ = tokio::time::timeout(Duration::from_secs(3), js.delete_stream(&stream))
                        .await;
                }
            });
            Ok::<_, std::io::Error>(())
        })
        .join();
    }
}

/// Common settings pointing at a test database and bus.
pub fn common(database_url: &str, bus: &TestBus) -> Common {
    Common {
        database_url: database_url.to_owned(),
        nats_url: bus.nats_url.clone(),
        event_store_url: "http://127.0.0.1:1".into(),
        jetstream_stream: bus.stream.clone(),
        jetstream_replicas: 1,
        subject_prefix: bus.prefix.clone(),
        event_store_auth_secret: "test-secret".into(),
        event_store_token: None,
        contact_salt: "test-salt".into(),
        drain_timeout: Duration::from_secs(10),
    }
}

/// Polls `check` until it returns `Some`, for at most `patience`; panics
/// with `what` otherwise. For waiting on asynchronous effects in tests (a
/// generous bound that only matters when something is broken, not a timing
/// assertion).
pub async fn eventually<T, F, Fut>(what: &str, patience: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + patience;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("gave up waiting for {what} after {patience:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
