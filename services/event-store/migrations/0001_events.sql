-- The event log: one insert-only table.
--
-- Global order. Appends are serialised by a transaction-level advisory lock
-- taken by a BEFORE INSERT statement trigger, before the identity default
-- assigns positions. So a transaction assigns its positions only after every
-- earlier appender has committed (or aborted), and commits before the next one
-- can assign any: commit order equals position order, and every snapshot sees
-- a prefix of the log (with gaps where an append aborted). A reader that
-- resumes after the last position it saw can never skip an event, whatever
-- the number of concurrent writers, and needs no timed gap-skip. The event
-- store's group commit (eventlog.append_group below) takes the lock before it
-- reads anything; the trigger makes the guarantee hold for any writer.
CREATE TABLE eventlog.events (
    position       bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id       uuid        NOT NULL,
    stream         text        NOT NULL,
    version        bigint      NOT NULL CHECK (version >= 1),
    category       text        NOT NULL,
    type           text        NOT NULL,
    occurred_at    timestamptz NOT NULL,
    recorded_at    timestamptz NOT NULL DEFAULT clock_timestamp(),
    correlation_id uuid        NOT NULL,
    causation_id   uuid,
    traceparent    text        NOT NULL DEFAULT '',
    tracestate     text        NOT NULL DEFAULT '',
    producer       text        NOT NULL,
    payload        bytea       NOT NULL,
    CONSTRAINT events_event_id_key UNIQUE (event_id),
    CONSTRAINT events_stream_version_key UNIQUE (stream, version)
);

-- Time-range reads find their first position through this; BRIN because
-- recorded_at grows with position, so it costs almost nothing on insert.
CREATE INDEX events_recorded_at_brin ON eventlog.events USING brin (recorded_at);

CREATE FUNCTION eventlog.serialize_appends() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The same key as in eventlog.append_group; the relay's lease uses the next one.
    PERFORM pg_advisory_xact_lock(7250482940277416751);
    RETURN NULL;
END $$;

CREATE TRIGGER events_serialize_appends
    BEFORE INSERT ON eventlog.events
    FOR EACH STATEMENT EXECUTE FUNCTION eventlog.serialize_appends();

-- Immutability, enforced by the database: UPDATE, DELETE and TRUNCATE are
-- refused for everyone, the table owner included. ENABLE ALWAYS keeps the
-- triggers firing even under session_replication_role = replica.
CREATE FUNCTION eventlog.refuse_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'eventlog.events is append-only: % is not allowed', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END $$;

CREATE TRIGGER events_refuse_update_delete
    BEFORE UPDATE OR DELETE ON eventlog.events
    FOR EACH STATEMENT EXECUTE FUNCTION eventlog.refuse_change();
CREATE TRIGGER events_refuse_truncate
    BEFORE TRUNCATE ON eventlog.events
    FOR EACH STATEMENT EXECUTE FUNCTION eventlog.refuse_change();
ALTER TABLE eventlog.events ENABLE ALWAYS TRIGGER events_refuse_update_delete;
ALTER TABLE eventlog.events ENABLE ALWAYS TRIGGER events_refuse_truncate;
ALTER TABLE eventlog.events ENABLE ALWAYS TRIGGER events_serialize_appends;

-- Privileges: a role for the event store's own connections in production
-- (INSERT and SELECT only) and one for readers (SELECT only). Nobody is
-- granted UPDATE, DELETE or TRUNCATE. Roles are cluster-wide, so creating
-- them tolerates another database having done it first.
DO $$
BEGIN
    -- Looked up first: CREATE ROLE needs CREATEROLE even when the role
    -- exists, and a managed database's owner may not have it.
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'callflow_eventlog_writer') THEN
        CREATE ROLE callflow_eventlog_writer NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
DO $$
BEGIN
    -- Looked up first: CREATE ROLE needs CREATEROLE even when the role
    -- exists, and a managed database's owner may not have it.
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'callflow_eventlog_reader') THEN
        CREATE ROLE callflow_eventlog_reader NOLOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
END $$;
REVOKE ALL ON eventlog.events FROM PUBLIC;
GRANT USAGE ON SCHEMA eventlog TO callflow_eventlog_writer, callflow_eventlog_reader;
GRANT SELECT, INSERT ON eventlog.events TO callflow_eventlog_writer;
GRANT SELECT ON eventlog.events TO callflow_eventlog_reader;

-- The relay's checkpoint: the last position JetStream acknowledged.
CREATE TABLE eventlog.relay_checkpoint (
    name       text PRIMARY KEY,
    position   bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now()
);
GRANT SELECT, INSERT, UPDATE ON eventlog.relay_checkpoint TO callflow_eventlog_writer;

-- One group commit of the event store's writer, in one round trip: the
-- appends of several callers, each checked on its own and written together.
-- Called outside an explicit transaction, so the statement's implicit
-- transaction commits as it returns.
--
-- Requests are given as parallel arrays (r_*), their events concatenated in
-- request order (e_*), r_size[i] events for request i. r_expected[i] is NULL
-- for "any version", 0 for "no stream yet", n for "exactly version n". The
-- caller makes sure no event id appears in two requests of one group.
--
-- Rows returned, by request index:
--   'appended'      one row per event: its new position; stream_version is
--                   the stream's version after the request;
--   'duplicate'     every event was already in the log: one row per event
--                   with its original position; stream_version is the
--                   version of the batch's last event;
--   'wrong_version' one row; stream_version is the stream's current version;
--   'conflict'      one row; detail says why (ids partly in the log, or used
--                   in another stream).
-- Each statement inside runs with a fresh snapshot (READ COMMITTED, VOLATILE)
-- taken after the lock, so it sees every append committed before this one.
CREATE FUNCTION eventlog.append_group(
    r_stream      text[],
    r_category    text[],
    r_expected    bigint[],
    r_producer    text[],
    r_size        int[],
    e_id          uuid[],
    e_type        text[],
    e_occurred    timestamptz[],
    e_correlation uuid[],
    e_causation   uuid[],
    e_traceparent text[],
    e_tracestate  text[],
    e_payload     bytea[]
) RETURNS TABLE (request int, outcome text, detail text, stream_version bigint, event_position bigint)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    first_event   int := 1;
    ids           uuid[];
    known         int;
    other_stream  text;
    known_positions bigint[];
    known_version bigint;
    current       bigint;
    slot          int;
    p             bigint;
    -- Versions the streams of this group will have, as requests are accepted.
    group_streams  text[] := '{}';
    group_versions bigint[] := '{}';
    -- The rows to insert, in order.
    ins_event    int[] := '{}';
    ins_request  int[] := '{}';
    ins_stream   text[] := '{}';
    ins_version  bigint[] := '{}';
    ins_category text[] := '{}';
    ins_producer text[] := '{}';
    ins_final    bigint[] := '{}';
BEGIN
    PERFORM pg_advisory_xact_lock(7250482940277416751);
    FOR i IN 1 .. coalesce(cardinality(r_stream), 0) LOOP
        ids := e_id[first_event : first_event + r_size[i] - 1];

        SELECT count(*),
               min(e.stream) FILTER (WHERE e.stream <> r_stream[i]),
               array_agg(e.position ORDER BY e.position),
               max(e.version)
          INTO known, other_stream, known_positions, known_version
          FROM eventlog.events e
         WHERE e.event_id = ANY (ids);

        IF known > 0 THEN
            request := i;
            stream_version := NULL;
            event_position := NULL;
            detail := NULL;
            IF other_stream IS NOT NULL THEN
                outcome := 'conflict';
                detail := 'an event id of this batch is already used in stream ' || other_stream;
                RETURN NEXT;
            ELSIF known < r_size[i] THEN
                outcome := 'conflict';
                detail := known || ' of the ' || r_size[i] || ' events are already in the log and the others are not; '
                          || 'retry the original batch unchanged, or use new ids';
                RETURN NEXT;
            ELSE
                outcome := 'duplicate';
                stream_version := known_version;
                FOREACH p IN ARRAY known_positions LOOP
                    event_position := p;
                    RETURN NEXT;
                END LOOP;
            END IF;
        ELSE
            slot := array_position(group_streams, r_stream[i]);
            IF slot IS NULL THEN
                SELECT coalesce(max(e.version), 0) INTO current FROM eventlog.events e WHERE e.stream = r_stream[i];
                group_streams := group_streams || r_stream[i];
                group_versions := group_versions || current;
                slot := cardinality(group_streams);
            ELSE
                current := group_versions[slot];
            END IF;

            IF r_expected[i] IS NOT NULL AND r_expected[i] <> current THEN
                request := i;
                outcome := 'wrong_version';
                detail := NULL;
                stream_version := current;
                event_position := NULL;
                RETURN NEXT;
            ELSE
                group_versions[slot] := current + r_size[i];
                FOR k IN 0 .. r_size[i] - 1 LOOP
                    ins_event := ins_event || (first_event + k);
                    ins_request := ins_request || i;
                    ins_stream := ins_stream || r_stream[i];
                    ins_version := ins_version || (current + 1 + k);
                    ins_category := ins_category || r_category[i];
                    ins_producer := ins_producer || r_producer[i];
                    ins_final := ins_final || (current + r_size[i]);
                END LOOP;
            END IF;
        END IF;
        first_event := first_event + r_size[i];
    END LOOP;

    IF cardinality(ins_event) > 0 THEN
        RETURN QUERY
        WITH inserted AS (
            INSERT INTO eventlog.events (event_id, stream, version, category, type, occurred_at,
                                         correlation_id, causation_id, traceparent, tracestate, producer, payload)
            SELECT e_id[x.ev], x.stream, x.version, x.category, e_type[x.ev],
                   coalesce(e_occurred[x.ev], clock_timestamp()), e_correlation[x.ev], e_causation[x.ev],
                   e_traceparent[x.ev], e_tracestate[x.ev], x.producer, e_payload[x.ev]
              FROM unnest(ins_event, ins_stream, ins_version, ins_category, ins_producer)
                   WITH ORDINALITY AS x(ev, stream, version, category, producer, ord)
             ORDER BY x.ord
            RETURNING events.stream, events.version, events.position
        )
        SELECT x.request, 'appended'::text, NULL::text, x.final, inserted.position
          FROM inserted
          JOIN unnest(ins_request, ins_stream, ins_version, ins_final) AS x(request, stream, version, final)
            ON x.stream = inserted.stream AND x.version = inserted.version;
    END IF;
END $$;
