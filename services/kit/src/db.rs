//! Postgres connections and versioned schema migrations.
//!
//! Every service owns one Postgres schema and migrates it at start-up from
//! SQL files compiled into its binary. Migrations run under an advisory lock,
//! so several replicas starting at once apply each one exactly once, and
//! running them again is harmless.

use std::str::FromStr;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tokio_postgres::{Client, NoTls};

/// Errors of this module.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("invalid database URL: {0}")]
    Url(#[source] tokio_postgres::Error),
    #[error("cannot connect to Postgres: {0}")]
    Connect(#[source] tokio_postgres::Error),
    #[error("migration {schema}/{version} ({name}) failed: {source}")]
    Migration {
        schema: String,
        version: i32,
        name: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
    #[error(transparent)]
    Postgres(#[from] tokio_postgres::Error),
    #[error("connection pool: {0}")]
    Pool(String),
}

/// One versioned migration: plain SQL, applied in a transaction.
#[derive(Debug, Clone, Copy)]
pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Opens one connection and drives it on a background task.
pub async fn connect(url: &str) -> Result<Client, DbError> {
    let config = tokio_postgres::Config::from_str(url).map_err(DbError::Url)?;
    let (client, connection) = config.connect(NoTls).await.map_err(DbError::Connect)?;
    tokio::spawn(async move {
        if let Err(error) = connection.await {
            tracing::debug!(%error, "postgres connection closed");
        }
    });
    Ok(client)
}

/// A pool of up to `size` connections. Connections are opened lazily.
pub fn pool(url: &str, size: usize) -> Result<Pool, DbError> {
    let config = tokio_postgres::Config::from_str(url).map_err(DbError::Url)?;
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .build()
        .map_err(|e| DbError::Pool(e.to_string()))
}

/// Applies the migrations of `schema` that are not applied yet, in version
/// order, each in its own transaction, and records them in
/// `<schema>._migrations`.
pub async fn migrate(
    client: &mut Client,
    schema: &str,
    migrations: &[Migration],
) -> Result<(), DbError> {
    let lock_key = format!("callflow.migrate.{schema}");
    client
        .execute("SELECT pg_advisory_lock(hashtext($1))", &[&lock_key])
        .await?;
    let result = apply(client, schema, migrations).await;
    client
        .execute("SELECT pg_advisory_unlock(hashtext($1))", &[&lock_key])
        .await?;
    result
}

async fn apply(client: &mut Client, schema: &str, migrations: &[Migration]) -> Result<(), DbError> {
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema};
             CREATE TABLE IF NOT EXISTS {schema}._migrations (
                 version integer PRIMARY KEY,
                 name text NOT NULL,
                 applied_at timestamptz NOT NULL DEFAULT now()
             );"
        ))
        .await?;
    let applied: Vec<i32> = client
        .query(&format!("SELECT version FROM {schema}._migrations"), &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    let mut pending: Vec<&Migration> = migrations
        .iter()
        .filter(|m| !applied.contains(&m.version))
        .collect();
    pending.sort_by_key(|m| m.version);
    for migration in pending {
        let failed = |source| DbError::Migration {
            schema: schema.to_owned(),
            version: migration.version,
            name: migration.name,
            source,
        };
        let tx = client.transaction().await?;
        tx.batch_execute(migration.sql).await.map_err(failed)?;
        tx.execute(
            &format!("INSERT INTO {schema}._migrations (version, name) VALUES ($1, $2)"),
            &[&migration.version, &migration.name],
        )
        .await
        .map_err(failed)?;
        tx.commit().await.map_err(failed)?;
        tracing::info!(
            schema,
            version = migration.version,
            name = migration.name,
            "migration applied"
        );
    }
    Ok(())
}

/// The URL of database `name` on the server of `url`.
pub fn url_with_database(url: &str, name: &str) -> String {
    let Ok(config) = tokio_postgres::Config::from_str(url) else {
        return url.to_owned();
    };
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            tokio_postgres::config::Host::Tcp(host) => host.clone(),
            tokio_postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "127.0.0.1".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let user = config.get_user().unwrap_or("postgres");
    let password = config
        .get_password()
        .map(|p| format!(":{}", String::from_utf8_lossy(p)))
        .unwrap_or_default();
    if host.starts_with('/') {
        format!("postgres://{user}{password}@/{name}?host={host}&port={port}")
    } else {
        format!("postgres://{user}{password}@{host}:{port}/{name}")
    }
}
