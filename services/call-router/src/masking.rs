//! Masking sessions of the neutral number: an order code maps to a
//! courier's and a client's numbers until the session expires, like a
//! key-value store with expiry. The delivery service opens, extends and
//! closes them through the gRPC `Masking` API (events
//! `MaskingSession{Opened,Extended,Closed}` on `masking-<session_id>`);
//! [`MaskingProjector`] keeps the table calls are routed by. Expiry needs no
//! event: a session is live while `expires_at` is ahead of the clock.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};
use jiff::Timestamp;
use tokio_postgres::GenericClient;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use kit::clock::SharedClock;
use kit::events::{decode, from_proto_time, new_event, to_proto_time};
use kit::phone::{DefaultRegion, PhoneNumber};
use kit::projection::{ApplyError, Projector};
use kit::proto::events::v1::{
    ContactForgotten, Event, MaskingSessionClosed, MaskingSessionExtended, MaskingSessionOpened,
};
use kit::proto::eventstore::v1::Filter;
use kit::proto::routing::v1::masking_server::Masking;
use kit::proto::routing::v1::{
    CloseSessionRequest, ExtendSessionRequest, GetSessionRequest, OpenSessionRequest, Session,
};
use kit::store_client::EventStoreClient;

use crate::directory::{append_all, settle};

/// The longest a session may live in one go.
pub const MAX_TTL: Duration = Duration::from_secs(30 * 24 * 3600);

pub struct MaskingProjector {
    pub contact_salt: String,
}

impl Projector for MaskingProjector {
    fn schema(&self) -> &'static str {
        crate::SCHEMA
    }
    fn name(&self) -> &'static str {
        "masking"
    }
    fn filter(&self) -> Filter {
        Filter {
            categories: vec!["masking".into(), kit::contacts::FORGOTTEN_CATEGORY.into()],
            ..Default::default()
        }
    }
    fn tables(&self) -> &'static [&'static str] {
        &["masking_sessions"]
    }

    async fn apply(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ApplyError> {
        match event.r#type.as_str() {
            "MaskingSessionOpened" => {
                let e: MaskingSessionOpened = decode(event)?;
                let session = session_uuid(&e.session_id)?;
                let opened = event
                    .occurred_at
                    .as_ref()
                    .or(event.recorded_at.as_ref())
                    .and_then(from_proto_time)
                    .unwrap_or_default();
                let expires = time(e.expires_at.as_ref())?;
                let contact = PhoneNumber::parse(&e.client_phone, DefaultRegion::default())
                    .ok()
                    .map(|p| kit::contacts::contact_stream(&self.contact_salt, &p));
                tx.execute(
                    "INSERT INTO call_router.masking_sessions
                         (session_id, order_code, courier_phone, client_phone, order_id,
                          opened_at, expires_at, contact_stream)
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
                     ON CONFLICT (session_id) DO NOTHING",
                    &[
                        &session,
                        &e.order_code,
                        &e.courier_phone,
                        &e.client_phone,
                        &e.order_id,
                        &to_system(opened),
                        &to_system(expires),
                        &contact,
                    ],
                )
                .await?;
            }
            "MaskingSessionExtended" => {
                let e: MaskingSessionExtended = decode(event)?;
                tx.execute(
                    "UPDATE call_router.masking_sessions SET expires_at = $2 WHERE session_id = $1",
                    &[
                        &session_uuid(&e.session_id)?,
                        &to_system(time(e.expires_at.as_ref())?),
                    ],
                )
                .await?;
            }
            "MaskingSessionClosed" => {
                let e: MaskingSessionClosed = decode(event)?;
                tx.execute(
                    "UPDATE call_router.masking_sessions SET closed = true WHERE session_id = $1",
                    &[&session_uuid(&e.session_id)?],
                )
                .await?;
            }
            "ContactForgotten" => {
                let e: ContactForgotten = decode(event)?;
                tx.execute(
                    "DELETE FROM call_router.masking_sessions WHERE contact_stream = $1",
                    &[&e.contact_stream],
                )
                .await?;
            }
            _ => {}
        }
        Ok(())
    }
}

fn session_uuid(text: &str) -> Result<Uuid, ApplyError> {
    Uuid::parse_str(text).map_err(|_| ApplyError::Unusable(format!("session id `{text}`")))
}

fn time(ts: Option<&prost_types::Timestamp>) -> Result<Timestamp, ApplyError> {
    ts.and_then(from_proto_time)
        .ok_or_else(|| ApplyError::Unusable("no expiry".into()))
}

fn to_system(ts: Timestamp) -> std::time::SystemTime {
    kit::events::to_system_time(ts)
}

/// A session as the table holds it.
#[derive(Debug, Clone)]
pub struct SessionRow {
    pub session_id: String,
    pub order_code: String,
    pub courier_phone: String,
    pub client_phone: String,
    pub order_id: String,
    pub expires_at: Timestamp,
    pub live: bool,
}

const COLUMNS: &str =
    "session_id::text, order_code, courier_phone, client_phone, order_id, expires_at, closed";

fn row(r: &tokio_postgres::Row, now: Timestamp) -> SessionRow {
    let expires: std::time::SystemTime = r.get(5);
    let expires_at = Timestamp::try_from(expires).unwrap_or_default();
    let closed: bool = r.get(6);
    SessionRow {
        session_id: r.get(0),
        order_code: r.get(1),
        courier_phone: r.get(2),
        client_phone: r.get(3),
        order_id: r.get(4),
        expires_at,
        live: !closed && expires_at > now,
    }
}

/// The live session of `code` at `now`.
pub async fn live_session(
    client: &deadpool_postgres::Client,
    code: &str,
    now: Timestamp,
) -> Result<Option<SessionRow>, tokio_postgres::Error> {
    let sql = client
        .prepare_cached(&format!(
            "SELECT {COLUMNS} FROM call_router.masking_sessions
              WHERE order_code = $1 AND NOT closed AND expires_at > $2
              ORDER BY expires_at DESC LIMIT 1"
        ))
        .await?;
    Ok(client
        .query_opt(&sql, &[&code, &to_system(now)])
        .await?
        .map(|r| row(&r, now)))
}

/// The latest session of `code`, live or not.
async fn latest_session(
    client: &impl GenericClient,
    code: &str,
    now: Timestamp,
) -> Result<Option<SessionRow>, tokio_postgres::Error> {
    Ok(client
        .query_opt(
            &format!(
                "SELECT {COLUMNS} FROM call_router.masking_sessions
                  WHERE order_code = $1 ORDER BY opened_at DESC, expires_at DESC LIMIT 1"
            ),
            &[&code],
        )
        .await?
        .map(|r| row(&r, now)))
}

/// The gRPC `Masking`.
#[derive(Clone)]
pub struct MaskingApi {
    pub store: EventStoreClient,
    pub pool: Pool,
    pub clock: SharedClock,
    pub projector: Arc<MaskingProjector>,
}

fn check_code(code: &str) -> Result<(), Status> {
    if (1..=12).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(())
    } else {
        Err(Status::invalid_argument(
            "order_code: 1 to 12 digits (what the caller types)",
        ))
    }
}

fn check_ttl(ttl: Option<&prost_types::Duration>) -> Result<Duration, Status> {
    let ttl = ttl
        .and_then(|d| Duration::try_from(*d).ok())
        .filter(|d| !d.is_zero() && *d <= MAX_TTL)
        .ok_or_else(|| Status::invalid_argument("ttl: longer than zero and at most 30 days"))?;
    Ok(ttl)
}

fn phone(text: &str, field: &str) -> Result<String, Status> {
    PhoneNumber::parse(text, DefaultRegion::default())
        .map(|p| p.as_str().to_owned())
        .map_err(|e| Status::invalid_argument(format!("{field}: `{text}` {e}")))
}

fn reply(s: SessionRow) -> Session {
    Session {
        session_id: s.session_id,
        order_code: s.order_code,
        courier_phone: s.courier_phone,
        client_phone: s.client_phone,
        expires_at: Some(to_proto_time(s.expires_at)),
        order_id: s.order_id,
        live: s.live,
    }
}

fn unavailable(e: impl std::fmt::Display) -> Status {
    Status::unavailable(e.to_string())
}

impl MaskingApi {
    async fn live(&self, code: &str) -> Result<Option<SessionRow>, Status> {
        let client = self.pool.get().await.map_err(unavailable)?;
        live_session(&client, code, self.clock.now())
            .await
            .map_err(unavailable)
    }

    /// Appends `events` and waits until the table shows them.
    async fn write(
        &self,
        events: Vec<(String, kit::proto::eventstore::v1::NewEvent)>,
    ) -> Result<(), Status> {
        let position = append_all(&self.store, events).await?;
        settle(&self.pool, &*self.projector, position).await;
        Ok(())
    }

    async fn extend(&self, session: SessionRow, ttl: Duration) -> Result<Session, Status> {
        let expires_at = self.clock.now() + ttl;
        let event = MaskingSessionExtended {
            session_id: session.session_id.clone(),
            expires_at: Some(to_proto_time(expires_at)),
        };
        self.write(vec![(
            format!("masking-{}", session.session_id),
            new_event(Uuid::new_v4(), Some(self.clock.now()), &event),
        )])
        .await?;
        Ok(reply(SessionRow {
            expires_at,
            ..session
        }))
    }
}

#[tonic::async_trait]
impl Masking for MaskingApi {
    async fn open(
        &self,
        request: Request<OpenSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let r = request.into_inner();
        check_code(&r.order_code)?;
        let courier = phone(&r.courier_phone, "courier_phone")?;
        let client = phone(&r.client_phone, "client_phone")?;
        if courier == client {
            return Err(Status::invalid_argument(
                "client_phone: the same number as the courier's",
            ));
        }
        let ttl = check_ttl(r.ttl.as_ref())?;
        let mut events = Vec::new();
        if let Some(live) = self.live(&r.order_code).await? {
            if live.courier_phone == courier && live.client_phone == client {
                return self.extend(live, ttl).await.map(Response::new);
            }
            // Another delivery now has this code: the old one ends.
            events.push((
                format!("masking-{}", live.session_id),
                new_event(
                    Uuid::new_v4(),
                    Some(self.clock.now()),
                    &MaskingSessionClosed {
                        session_id: live.session_id.clone(),
                        order_code: live.order_code.clone(),
                    },
                ),
            ));
        }
        let now = self.clock.now();
        let session = SessionRow {
            session_id: Uuid::new_v4().to_string(),
            order_code: r.order_code,
            courier_phone: courier,
            client_phone: client,
            order_id: r.order_id,
            expires_at: now + ttl,
            live: true,
        };
        let opened = MaskingSessionOpened {
            session_id: session.session_id.clone(),
            order_code: session.order_code.clone(),
            courier_phone: session.courier_phone.clone(),
            client_phone: session.client_phone.clone(),
            expires_at: Some(to_proto_time(session.expires_at)),
            order_id: session.order_id.clone(),
        };
        // The close (if any) first: both are appended before answering, and
        // a close that fails stops the open (no two live sessions).
        if !events.is_empty() {
            self.write(events).await?;
        }
        self.write(vec![(
            format!("masking-{}", session.session_id),
            new_event(Uuid::new_v4(), Some(now), &opened),
        )])
        .await?;
        Ok(Response::new(reply(session)))
    }

    async fn extend(
        &self,
        request: Request<ExtendSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let r = request.into_inner();
        check_code(&r.order_code)?;
        let ttl = check_ttl(r.ttl.as_ref())?;
        let live = self
            .live(&r.order_code)
            .await?
            .ok_or_else(|| Status::not_found("no live session has this code"))?;
        MaskingApi::extend(self, live, ttl).await.map(Response::new)
    }

    async fn close(
        &self,
        request: Request<CloseSessionRequest>,
    ) -> Result<Response<Session>, Status> {
        let r = request.into_inner();
        check_code(&r.order_code)?;
        let now = self.clock.now();
        let latest = {
            let client = self.pool.get().await.map_err(unavailable)?;
            latest_session(&**client, &r.order_code, now)
                .await
                .map_err(unavailable)?
        }
        .ok_or_else(|| Status::not_found("no session has had this code"))?;
        if !latest.live {
            return Ok(Response::new(reply(latest)));
        }
        self.write(vec![(
            format!("masking-{}", latest.session_id),
            new_event(
                Uuid::new_v4(),
                Some(now),
                &MaskingSessionClosed {
                    session_id: latest.session_id.clone(),
                    order_code: latest.order_code.clone(),
                },
            ),
        )])
        .await?;
        Ok(Response::new(reply(SessionRow {
            live: false,
            ..latest
        })))
    }

    async fn get(&self, request: Request<GetSessionRequest>) -> Result<Response<Session>, Status> {
        let r = request.into_inner();
        check_code(&r.order_code)?;
        self.live(&r.order_code)
            .await?
            .map(|s| Response::new(reply(s)))
            .ok_or_else(|| Status::not_found("no live session has this code"))
    }
}
