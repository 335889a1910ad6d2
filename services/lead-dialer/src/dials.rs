//! The dial claims (`lead_dialer.dials`): the one row per attempt that
//! lets exactly one handler ask a provider to call, and that maps a
//! provider's call id back to the lead for results that name only the call.
//!
//! A claim is taken before the provider is asked and holds the call id once
//! it answered. A handler that finds a claim without an event knows that a
//! call may have been placed by someone who died before recording it, and
//! does not dial again.

use deadpool_postgres::Pool;
use uuid::Uuid;

/// How long a claim may stay without the provider's answer before its
/// holder is taken for dead (well above any provider's request timeout).
const STALE_AFTER_SECONDS: f64 = 60.0;

/// What claiming an attempt found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// Ours: ask the provider.
    Won,
    /// Placed already; the provider's call id.
    Placed(String),
    /// Someone is asking the provider right now.
    Dialing,
    /// Someone asked and never came back: the call may have rung.
    Abandoned,
}

/// Claims attempt `attempt` of `lead_id` for `dialer`.
pub async fn claim(
    pool: &Pool,
    lead_id: Uuid,
    attempt: u32,
    dialer: &str,
) -> Result<Claim, Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    let attempt = attempt as i32;
    let insert = client
        .prepare_cached(
            "INSERT INTO lead_dialer.dials (lead_id, attempt, dialer, state, claimed_at)
             VALUES ($1, $2, $3, 'dialing', now()) ON CONFLICT DO NOTHING",
        )
        .await?;
    let inserted = client
        .execute(&insert, &[&lead_id, &attempt, &dialer])
        .await?;
    if inserted == 1 {
        return Ok(Claim::Won);
    }
    let row = client
        .query_opt(
            "SELECT state, provider_call_id, extract(epoch FROM now() - claimed_at)::float8
               FROM lead_dialer.dials WHERE lead_id = $1 AND attempt = $2",
            &[&lead_id, &attempt],
        )
        .await?;
    Ok(match row {
        // Released between our insert and this read: take it next time.
        None => Claim::Dialing,
        Some(row) => {
            let state: String = row.get(0);
            let call_id: Option<String> = row.get(1);
            let age: f64 = row.get(2);
            match (state.as_str(), call_id) {
                ("placed", Some(id)) => Claim::Placed(id),
                _ if age > STALE_AFTER_SECONDS => Claim::Abandoned,
                _ => Claim::Dialing,
            }
        }
    })
}

/// Records the provider's call id of a claimed attempt.
pub async fn placed(
    pool: &Pool,
    lead_id: Uuid,
    attempt: u32,
    call_id: &str,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    let update = client
        .prepare_cached(
            "UPDATE lead_dialer.dials SET state = 'placed', provider_call_id = $3
              WHERE lead_id = $1 AND attempt = $2",
        )
        .await?;
    client
        .execute(&update, &[&lead_id, &(attempt as i32), &call_id])
        .await?;
    Ok(())
}

/// Gives a claim back: the provider certainly did not call.
pub async fn release(
    pool: &Pool,
    lead_id: Uuid,
    attempt: u32,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    pool.get()
        .await?
        .execute(
            "DELETE FROM lead_dialer.dials WHERE lead_id = $1 AND attempt = $2 AND state = 'dialing'",
            &[&lead_id, &(attempt as i32)],
        )
        .await?;
    Ok(())
}

/// The lead and attempt of a provider's call.
pub async fn find(
    pool: &Pool,
    dialer: &str,
    call_id: &str,
) -> Result<Option<(Uuid, u32)>, Box<dyn std::error::Error + Send + Sync>> {
    let client = pool.get().await?;
    let select = client
        .prepare_cached(
            "SELECT lead_id, attempt FROM lead_dialer.dials WHERE dialer = $1 AND provider_call_id = $2",
        )
        .await?;
    let row = client.query_opt(&select, &[&dialer, &call_id]).await?;
    Ok(row.map(|row| (row.get(0), row.get::<_, i32>(1) as u32)))
}
