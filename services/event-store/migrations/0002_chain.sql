-- Tamper evidence: each event stores a hash chaining it to the previous
-- event in log order, chain_hash = sha256(previous chain_hash || canonical
-- bytes of the event). Editing, deleting or inserting a row behind the
-- store's back (a superuser can bypass the insert-only guard) breaks the
-- chain from that row on; `callflow events verify` recomputes it and reports
-- the first broken position. Rows written before this migration have no
-- hash and are reported as unchained.
ALTER TABLE eventlog.events ADD COLUMN chain_hash bytea;

-- The bytes an event's hash covers: every column but chain_hash, in a fixed
-- encoding that does not depend on session settings.
CREATE FUNCTION eventlog.canonical(e eventlog.events) RETURNS bytea
LANGUAGE sql IMMUTABLE AS $$
    SELECT convert_to(concat_ws(E'\x1f',
               e.position::text, e.event_id::text, e.stream, e.version::text, e.category, e.type,
               (extract(epoch FROM e.occurred_at) * 1000000)::bigint::text,
               (extract(epoch FROM e.recorded_at) * 1000000)::bigint::text,
               e.correlation_id::text, coalesce(e.causation_id::text, ''), e.traceparent, e.tracestate, e.producer),
           'UTF8') || E'\\x1f'::bytea || e.payload
$$;

-- The statement trigger that serialises appends now also reads the last
-- hash, once per statement, after taking the lock (so it is the hash of the
-- event committed last), for the row trigger to continue from.
CREATE OR REPLACE FUNCTION eventlog.serialize_appends() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    last_hash bytea;
BEGIN
    -- The same key as in eventlog.append_group; the relay's lease uses the next one.
    PERFORM pg_advisory_xact_lock(7250482940277416751);
    SELECT chain_hash INTO last_hash FROM eventlog.events ORDER BY position DESC LIMIT 1;
    PERFORM set_config('callflow.chain_head', encode(coalesce(last_hash, ''::bytea), 'hex'), true);
    RETURN NULL;
END $$;

CREATE FUNCTION eventlog.chain_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    NEW.chain_hash := sha256(decode(current_setting('callflow.chain_head'), 'hex') || eventlog.canonical(NEW));
    PERFORM set_config('callflow.chain_head', encode(NEW.chain_hash, 'hex'), true);
    RETURN NEW;
END $$;

CREATE TRIGGER events_chain
    BEFORE INSERT ON eventlog.events
    FOR EACH ROW EXECUTE FUNCTION eventlog.chain_event();
ALTER TABLE eventlog.events ENABLE ALWAYS TRIGGER events_chain;
