-- call-router's read models, all projections of the log (rebuilt by
-- `call-router rebuild`): the directory callers are identified by, the
-- masking sessions, and the calls for statistics.

-- Directory (directory.rs), from ShopUpserted / OrderUpserted /
-- CourierUpserted. Personal columns hold `[forgotten]` or are deleted once
-- a contact is forgotten.
CREATE TABLE call_router.shops (
    shop_id    text PRIMARY KEY,
    name       text NOT NULL,
    phone      text NOT NULL,
    city       text NOT NULL,
    open_hours text NOT NULL,
    time_zone  text NOT NULL
);
CREATE INDEX shops_by_phone ON call_router.shops (phone);

CREATE TABLE call_router.orders (
    order_id       text PRIMARY KEY,
    client_phone   text NOT NULL,
    client_name    text NOT NULL,
    shop_id        text NOT NULL,
    active         boolean NOT NULL,
    -- The log position of the last change: a client with several active
    -- orders is asked about the latest.
    position       bigint NOT NULL,
    contact_stream text
);
CREATE INDEX orders_active_by_phone ON call_router.orders (client_phone, position DESC) WHERE active;
CREATE INDEX orders_by_contact ON call_router.orders (contact_stream);

CREATE TABLE call_router.couriers (
    courier_id     text PRIMARY KEY,
    name           text NOT NULL,
    phone          text NOT NULL,
    external       boolean NOT NULL,
    store_phone    text NOT NULL,
    active         boolean NOT NULL,
    contact_stream text
);
CREATE INDEX couriers_by_phone ON call_router.couriers (phone) WHERE active AND external;
CREATE INDEX couriers_by_contact ON call_router.couriers (contact_stream);

-- Masking sessions (masking.rs). A session is live while not closed and
-- before expires_at; expiry needs no event (it is a time, compared with the
-- clock at lookup).
CREATE TABLE call_router.masking_sessions (
    session_id     uuid PRIMARY KEY,
    order_code     text NOT NULL,
    courier_phone  text NOT NULL,
    client_phone   text NOT NULL,
    order_id       text NOT NULL,
    opened_at      timestamptz NOT NULL,
    expires_at     timestamptz NOT NULL,
    closed         boolean NOT NULL DEFAULT false,
    contact_stream text
);
CREATE INDEX masking_sessions_open_by_code ON call_router.masking_sessions (order_code, expires_at DESC) WHERE NOT closed;
CREATE INDEX masking_sessions_by_contact ON call_router.masking_sessions (contact_stream);

-- Calls (stats.rs): one row per inbound call, filled in by its events.
CREATE TABLE call_router.calls (
    call_id           text PRIMARY KEY,
    started_at        timestamptz,
    caller_kind       text,
    answered_by       text,
    time_to_answer_ms bigint,
    fallback          boolean NOT NULL DEFAULT false,
    masking           boolean NOT NULL DEFAULT false,
    bridged           boolean NOT NULL DEFAULT false,
    session_id        text,
    courier_id        text,
    store_phone       text,
    answered          boolean NOT NULL DEFAULT false,
    talk_ms           bigint,
    recording_url     text,
    ended             boolean NOT NULL DEFAULT false
);
CREATE INDEX calls_by_start ON call_router.calls (started_at);
CREATE INDEX calls_by_courier ON call_router.calls (courier_id, started_at DESC) WHERE courier_id IS NOT NULL;

-- One row per Escalated event (idempotent when an event is applied again).
CREATE TABLE call_router.escalations (
    event_id uuid PRIMARY KEY,
    call_id  text NOT NULL
);
CREATE INDEX escalations_by_call ON call_router.escalations (call_id);

-- Events of decisions waiting to be appended to the log (outbox.rs). Not a
-- projection: the router writes here before answering the PBX, so that
-- nothing it answered is lost if the event store is slow or away.
CREATE TABLE call_router.outbox (
    id     bigserial PRIMARY KEY,
    stream text  NOT NULL,
    event  bytea NOT NULL
);

CREATE TABLE call_router.projection_checkpoint (
    name     text PRIMARY KEY,
    position bigint NOT NULL
);
