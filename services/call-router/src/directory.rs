//! The directory callers are identified by: partner shops (with their
//! phones and opening hours), clients' orders and couriers. The business's
//! systems feed it through the gRPC `Directory` API, which appends
//! `ShopUpserted` / `OrderUpserted` / `CourierUpserted`; the tables are
//! their projection ([`DirectoryProjector`]), read with one query per call
//! ([`PgLookups::identify`]).

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Pool, Transaction};
use futures::{StreamExt, TryStreamExt};
use jiff::tz::TimeZone;
use tonic::{Request, Response, Status};
use uuid::Uuid;

use kit::events::{decode, new_event};
use kit::phone::{DefaultRegion, PhoneNumber};
use kit::projection::{ApplyError, Projector};
use kit::proto::events::v1::{
    CallerKind, ContactForgotten, CourierUpserted, Event, OrderUpserted, ShopUpserted,
};
use kit::proto::eventstore::v1::{Filter, NewEvent};
use kit::proto::routing::v1::directory_server::Directory;
use kit::proto::routing::v1::{
    Caller as CallerReply, IdentifyRequest, UpsertRequest, UpsertResponse,
};
use kit::store_client::{EventStoreClient, Expected};

use crate::engine::{LookupError, Lookups, SessionView};
use crate::state::{Caller, ShopLine};

/// Entries one Upsert may carry.
pub const MAX_ENTRIES: usize = 5_000;

/// The directory's projection.
pub struct DirectoryProjector {
    pub contact_salt: String,
}

impl Projector for DirectoryProjector {
    fn schema(&self) -> &'static str {
        crate::SCHEMA
    }
    fn name(&self) -> &'static str {
        "directory"
    }
    fn filter(&self) -> Filter {
        Filter {
            categories: vec![
                "shop".into(),
                "order".into(),
                "courier".into(),
                kit::contacts::FORGOTTEN_CATEGORY.into(),
            ],
            ..Default::default()
        }
    }
    fn tables(&self) -> &'static [&'static str] {
        &["shops", "orders", "couriers"]
    }

    async fn apply(&self, tx: &Transaction<'_>, event: &Event) -> Result<(), ApplyError> {
        match event.r#type.as_str() {
            "ShopUpserted" => {
                let e: ShopUpserted = decode(event)?;
                let sql = tx
                    .prepare_cached(
                        "INSERT INTO call_router.shops (shop_id, name, phone, city, open_hours, time_zone)
                         VALUES ($1, $2, $3, $4, $5, $6)
                         ON CONFLICT (shop_id) DO UPDATE SET name = $2, phone = $3, city = $4,
                             open_hours = $5, time_zone = $6",
                    )
                    .await?;
                tx.execute(
                    &sql,
                    &[
                        &e.shop_id,
                        &e.name,
                        &e.phone,
                        &e.city,
                        &e.open_hours,
                        &e.time_zone,
                    ],
                )
                .await?;
            }
            "OrderUpserted" => {
                let e: OrderUpserted = decode(event)?;
                let contact = self.contact_stream(&e.client_phone);
                let sql = tx
                    .prepare_cached(
                        "INSERT INTO call_router.orders
                             (order_id, client_phone, client_name, shop_id, active, position, contact_stream)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (order_id) DO UPDATE SET client_phone = $2, client_name = $3,
                             shop_id = $4, active = $5, position = $6, contact_stream = $7",
                    )
                    .await?;
                tx.execute(
                    &sql,
                    &[
                        &e.order_id,
                        &e.client_phone,
                        &e.client_name,
                        &e.shop_id,
                        &e.active,
                        &(event.position as i64),
                        &contact,
                    ],
                )
                .await?;
            }
            "CourierUpserted" => {
                let e: CourierUpserted = decode(event)?;
                let contact = self.contact_stream(&e.phone);
                let sql = tx
                    .prepare_cached(
                        "INSERT INTO call_router.couriers
                             (courier_id, name, phone, external, store_phone, active, contact_stream)
                         VALUES ($1, $2, $3, $4, $5, $6, $7)
                         ON CONFLICT (courier_id) DO UPDATE SET name = $2, phone = $3,
                             external = $4, store_phone = $5, active = $6, contact_stream = $7",
                    )
                    .await?;
                tx.execute(
                    &sql,
                    &[
                        &e.courier_id,
                        &e.name,
                        &e.phone,
                        &e.external,
                        &e.store_phone,
                        &e.active,
                        &contact,
                    ],
                )
                .await?;
            }
            "ContactForgotten" => {
                // Nobody can be routed by a forgotten number: their entries
                // go (a rebuild reads them redacted and finds no number).
                let e: ContactForgotten = decode(event)?;
                for table in ["orders", "couriers"] {
                    tx.execute(
                        &format!("DELETE FROM call_router.{table} WHERE contact_stream = $1"),
                        &[&e.contact_stream],
                    )
                    .await?;
                }
            }
            _ => {}
        }
        Ok(())
    }
}

impl DirectoryProjector {
    fn contact_stream(&self, phone: &str) -> Option<String> {
        PhoneNumber::parse(phone, DefaultRegion::default())
            .ok()
            .map(|p| kit::contacts::contact_stream(&self.contact_salt, &p))
    }
}

/// The router's reads, on Postgres.
#[derive(Clone)]
pub struct PgLookups {
    pub pool: Pool,
}

impl PgLookups {
    async fn client(&self) -> Result<deadpool_postgres::Object, LookupError> {
        self.pool
            .get()
            .await
            .map_err(|e| LookupError(e.to_string()))
    }
}

fn db(e: tokio_postgres::Error) -> LookupError {
    LookupError(e.to_string())
}

impl Lookups for PgLookups {
    async fn identify(&self, phone: &PhoneNumber) -> Result<Caller, LookupError> {
        let client = self.client().await?;
        // One round trip: a shop, a courier and a client's latest active
        // order are looked up at once; a shop is a shop first.
        let sql = client
            .prepare_cached(
                "SELECT sh.shop_id, c.courier_id, c.store_phone, o.order_id, o.client_name,
                        s.shop_id, s.name, s.phone, s.open_hours, s.time_zone
                   FROM (SELECT 1) one
                   LEFT JOIN LATERAL (SELECT shop_id FROM call_router.shops
                                       WHERE phone = $1 LIMIT 1) sh ON true
                   LEFT JOIN LATERAL (SELECT courier_id, store_phone FROM call_router.couriers
                                       WHERE phone = $1 AND active AND external LIMIT 1) c ON true
                   LEFT JOIN LATERAL (SELECT order_id, client_name, shop_id FROM call_router.orders
                                       WHERE client_phone = $1 AND active
                                       ORDER BY position DESC LIMIT 1) o ON true
                   LEFT JOIN call_router.shops s ON s.shop_id = o.shop_id",
            )
            .await
            .map_err(db)?;
        let row = client
            .query_one(&sql, &[&phone.as_str()])
            .await
            .map_err(db)?;
        let own_shop: Option<String> = row.get(0);
        let courier: Option<String> = row.get(1);
        let order: Option<String> = row.get(3);
        let caller = if let Some(shop_id) = own_shop {
            Caller {
                kind: CallerKind::Shop as i32,
                shop: Some(ShopLine {
                    shop_id,
                    name: String::new(),
                    phone: phone.as_str().into(),
                    open_hours: String::new(),
                    time_zone: String::new(),
                }),
                ..Default::default()
            }
        } else if let Some(courier_id) = courier {
            Caller {
                kind: CallerKind::Courier as i32,
                courier_id,
                store_phone: row.get(2),
                ..Default::default()
            }
        } else if let Some(order_id) = order {
            let shop_id: Option<String> = row.get(5);
            Caller {
                kind: CallerKind::ClientWithOrder as i32,
                client_name: row.get(4),
                order_id,
                shop: shop_id.map(|shop_id| ShopLine {
                    shop_id,
                    name: row.get(6),
                    phone: row.get(7),
                    open_hours: row.get(8),
                    time_zone: row.get(9),
                }),
                ..Default::default()
            }
        } else {
            Caller {
                kind: CallerKind::Unknown as i32,
                ..Default::default()
            }
        };
        Ok(caller)
    }

    async fn session(
        &self,
        code: &str,
        now: jiff::Timestamp,
    ) -> Result<Option<SessionView>, LookupError> {
        let client = self.client().await?;
        crate::masking::live_session(&client, code, now)
            .await
            .map(|s| {
                s.map(|s| SessionView {
                    session_id: s.session_id,
                    courier_phone: s.courier_phone,
                    client_phone: s.client_phone,
                })
            })
            .map_err(db)
    }
}

/// The gRPC `Directory`.
#[derive(Clone)]
pub struct DirectoryApi {
    pub store: EventStoreClient,
    pub pool: Pool,
    pub lookups: PgLookups,
    pub projector: Arc<DirectoryProjector>,
}

fn invalid(field: String, why: impl std::fmt::Display) -> Status {
    Status::invalid_argument(format!("{field}: {why}"))
}

fn phone(text: &str, field: String) -> Result<String, Status> {
    PhoneNumber::parse(text, DefaultRegion::default())
        .map(|p| p.as_str().to_owned())
        .map_err(|e| invalid(field, format!("`{text}` {e}")))
}

fn id(text: &str, field: String) -> Result<(), Status> {
    if crate::protocol::valid_call_id(text) {
        Ok(())
    } else {
        Err(invalid(field, "1 to 128 characters of A-Z a-z 0-9 - _ . :"))
    }
}

/// Checks an Upsert whole and turns it into (stream, event) pairs.
pub fn upsert_events(request: UpsertRequest) -> Result<Vec<(String, NewEvent)>, Status> {
    let total = request.shops.len() + request.orders.len() + request.couriers.len();
    if total == 0 {
        return Err(Status::invalid_argument("nothing to upsert"));
    }
    if total > MAX_ENTRIES {
        return Err(Status::invalid_argument(format!(
            "{total} entries; at most {MAX_ENTRIES} per request"
        )));
    }
    let mut events = Vec::with_capacity(total);
    let mut push = |stream: String, event: NewEvent| events.push((stream, event));
    for (i, s) in request.shops.into_iter().enumerate() {
        id(&s.shop_id, format!("shops[{i}].shop_id"))?;
        if s.name.trim().is_empty() {
            return Err(invalid(format!("shops[{i}].name"), "is empty"));
        }
        if !s.open_hours.is_empty() {
            s.open_hours
                .parse::<kit::local_time::SendWindow>()
                .map_err(|e| invalid(format!("shops[{i}].open_hours"), e))?;
        }
        if !s.time_zone.is_empty() && TimeZone::get(&s.time_zone).is_err() {
            return Err(invalid(
                format!("shops[{i}].time_zone"),
                format!("`{}` is not an IANA time zone", s.time_zone),
            ));
        }
        let payload = ShopUpserted {
            phone: phone(&s.phone, format!("shops[{i}].phone"))?,
            shop_id: s.shop_id,
            name: s.name,
            city: s.city,
            open_hours: s.open_hours,
            time_zone: s.time_zone,
        };
        push(
            format!("shop-{}", payload.shop_id),
            new_event(Uuid::new_v4(), None, &payload),
        );
    }
    for (i, o) in request.orders.into_iter().enumerate() {
        id(&o.order_id, format!("orders[{i}].order_id"))?;
        if o.shop_id.is_empty() {
            return Err(invalid(format!("orders[{i}].shop_id"), "is empty"));
        }
        let payload = OrderUpserted {
            client_phone: phone(&o.client_phone, format!("orders[{i}].client_phone"))?,
            order_id: o.order_id,
            client_name: o.client_name,
            shop_id: o.shop_id,
            active: o.active,
        };
        push(
            format!("order-{}", payload.order_id),
            new_event(Uuid::new_v4(), None, &payload),
        );
    }
    for (i, c) in request.couriers.into_iter().enumerate() {
        id(&c.courier_id, format!("couriers[{i}].courier_id"))?;
        let store_phone = if c.store_phone.is_empty() {
            if c.external {
                return Err(invalid(
                    format!("couriers[{i}].store_phone"),
                    "an external courier needs the store line their calls go to",
                ));
            }
            String::new()
        } else {
            phone(&c.store_phone, format!("couriers[{i}].store_phone"))?
        };
        let payload = CourierUpserted {
            phone: phone(&c.phone, format!("couriers[{i}].phone"))?,
            courier_id: c.courier_id,
            name: c.name,
            external: c.external,
            store_phone,
            active: c.active,
        };
        push(
            format!("courier-{}", payload.courier_id),
            new_event(Uuid::new_v4(), None, &payload),
        );
    }
    Ok(events)
}

/// Appends `events` (a few streams at a time) and returns the highest
/// position.
pub async fn append_all(
    store: &EventStoreClient,
    events: Vec<(String, NewEvent)>,
) -> Result<u64, Status> {
    let positions: Vec<u64> = futures::stream::iter(events)
        .map(|(stream, event)| async move {
            store
                .append(&stream, Expected::Any, vec![event])
                .await
                .map(|r| r.positions.into_iter().max().unwrap_or(0))
                .map_err(|e| Status::unavailable(e.to_string()))
        })
        .buffer_unordered(16)
        .try_collect()
        .await?;
    Ok(positions.into_iter().max().unwrap_or(0))
}

/// Waits (a little) until `projector` has applied `position`: a write
/// through the API is then visible to the next call.
pub async fn settle<P: Projector>(pool: &Pool, projector: &P, position: u64) {
    kit::projection::settle(
        pool,
        projector.schema(),
        projector.name(),
        position,
        Duration::from_secs(5),
    )
    .await;
}

#[tonic::async_trait]
impl Directory for DirectoryApi {
    async fn upsert(
        &self,
        request: Request<UpsertRequest>,
    ) -> Result<Response<UpsertResponse>, Status> {
        let request = request.into_inner();
        let counts = UpsertResponse {
            shops: request.shops.len() as u32,
            orders: request.orders.len() as u32,
            couriers: request.couriers.len() as u32,
        };
        let events = upsert_events(request)?;
        let position = append_all(&self.store, events).await?;
        settle(&self.pool, &*self.projector, position).await;
        Ok(Response::new(counts))
    }

    async fn identify(
        &self,
        request: Request<IdentifyRequest>,
    ) -> Result<Response<CallerReply>, Status> {
        let text = request.into_inner().phone;
        let number = PhoneNumber::parse(&text, DefaultRegion::default())
            .map_err(|e| invalid("phone".into(), format!("`{text}` {e}")))?;
        let caller = self
            .lookups
            .identify(&number)
            .await
            .map_err(|e| Status::unavailable(e.0))?;
        let shop = caller.shop.clone();
        Ok(Response::new(CallerReply {
            kind: kind_name(caller.kind()).into(),
            client_name: caller.client_name,
            order_id: caller.order_id,
            shop_id: shop.as_ref().map(|s| s.shop_id.clone()).unwrap_or_default(),
            shop_name: shop.map(|s| s.name).unwrap_or_default(),
            courier_id: caller.courier_id,
        }))
    }
}

/// The name a caller kind has in APIs and statistics.
pub fn kind_name(kind: CallerKind) -> &'static str {
    match kind {
        CallerKind::ClientWithOrder => "client_with_order",
        CallerKind::Shop => "shop",
        CallerKind::Courier => "courier",
        CallerKind::Unknown | CallerKind::Unspecified => "unknown",
    }
}
