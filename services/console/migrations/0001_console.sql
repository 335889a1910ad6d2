-- The console's own state: sign-in sessions, and two projections of the
-- log — a search index (which flows a phone, call, order, lead or reminder
-- appears in) and the dead letters with what operators did about them.
-- The projections hold no personal data: a phone is indexed by its contact
-- stream (an HMAC), and the pages read personal fields from the event store,
-- which honours forgetting.

-- Who is signed in. The cookie carries a random token; only its SHA-256 is
-- kept, so a copy of this table signs nobody in.
CREATE TABLE console.sessions (
    token_hash  bytea PRIMARY KEY,
    username    text NOT NULL,
    created_at  timestamptz NOT NULL,
    expires_at  timestamptz NOT NULL
);
CREATE INDEX sessions_expires_at ON console.sessions (expires_at);

-- A flow: the events sharing one correlation id (a call and everything it
-- caused, a lead's life, an inbound call).
CREATE TABLE console.flows (
    correlation_id  uuid PRIMARY KEY,
    first_position  bigint NOT NULL,
    first_type      text NOT NULL,
    first_stream    text NOT NULL,
    started_at      timestamptz,
    last_at         timestamptz
);

-- Search keys (`call:<id>`, `order:<id>`, `lead:<id>`, `reminder:<id>`,
-- `contact:<contact stream>`) → the flows they appear in.
CREATE TABLE console.search_keys (
    key             text NOT NULL,
    correlation_id  uuid NOT NULL,
    PRIMARY KEY (key, correlation_id)
);

-- Messages a consumer parked, and what became of them.
CREATE TABLE console.dead_letters (
    consumer        text NOT NULL,
    event_id        text NOT NULL,
    event_type      text NOT NULL,
    event_stream    text NOT NULL,
    event_position  bigint NOT NULL,
    subject         text NOT NULL,
    deliveries      bigint NOT NULL,
    reason          text NOT NULL,
    parked_at       timestamptz,
    -- parked / retry_requested / retried / retry_failed / discarded.
    state           text NOT NULL CHECK (state IN ('parked', 'retry_requested', 'retried', 'retry_failed', 'discarded')),
    -- Who asked for the last change, and what came of it.
    changed_by      text,
    detail          text,
    changed_at      timestamptz,
    -- Position of the event the state reflects: a change applies only when newer.
    position        bigint NOT NULL,
    PRIMARY KEY (consumer, event_id)
);
CREATE INDEX dead_letters_parked_at ON console.dead_letters (parked_at);

CREATE TABLE console.projection_checkpoint (
    name     text PRIMARY KEY,
    position bigint NOT NULL
);
