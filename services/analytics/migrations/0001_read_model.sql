-- The analysts' read model: one row per call, reminder and SMS, built only
-- from events (so `analytics rebuild` can drop and replay it). It holds no
-- personal data — no numbers, names or texts — so forgetting a contact
-- needs nothing here, and analysts can be given this schema freely.

-- A call, with what became of it: transcript and consent decision.
CREATE TABLE analytics.calls (
    provider          text NOT NULL,
    call_id           text NOT NULL,
    -- The call's correlation id: every later event of its flow carries it.
    correlation_id    uuid,
    started_at        timestamptz,
    completed_at      timestamptz,
    duration_seconds  double precision,
    manager_id        text,
    transcribed_at    timestamptz,
    language          text,
    transcription_failed_at timestamptz,
    transcription_failure   text,
    analyzed_at       timestamptz,
    -- agreed / declined / unclear (NULL until analysed).
    consent_decision  text CHECK (consent_decision IN ('agreed', 'declined', 'unclear')),
    -- ISO 8601 period the client agreed to (`P1M`), when agreed.
    remind_after      text,
    opted_out         boolean NOT NULL DEFAULT false,
    consent_confidence double precision,
    analyzer_version  text,
    PRIMARY KEY (provider, call_id)
);
CREATE INDEX calls_started_at ON analytics.calls (started_at);

-- A reminder, and the call it came from (if any).
CREATE TABLE analytics.reminders (
    reminder_id   text PRIMARY KEY,
    provider      text,
    call_id       text,
    -- consent / manual / … (ReminderScheduled.source).
    source        text,
    scheduled_at  timestamptz,
    due_at        timestamptz,
    time_zone     text,
    -- pending / due / cancelled / expired.
    state         text NOT NULL CHECK (state IN ('pending', 'due', 'cancelled', 'expired')),
    fired_at      timestamptz,
    cancelled_at  timestamptz,
    expired_at    timestamptz,
    reschedules   integer NOT NULL DEFAULT 0,
    -- Stream version last applied: an event applies only when newer.
    version       bigint NOT NULL
);
CREATE INDEX reminders_call ON analytics.reminders (provider, call_id);

-- An SMS and its outcome.
CREATE TABLE analytics.sms (
    sms_id        text PRIMARY KEY,
    reminder_id   text,
    -- requested / sent / delivered / undelivered / failed.
    status        text NOT NULL CHECK (status IN ('requested', 'sent', 'delivered', 'undelivered', 'failed')),
    kind          text,
    parts         integer,
    attempts      integer NOT NULL DEFAULT 0,
    provider      text,
    requested_at  timestamptz,
    sent_at       timestamptz,
    delivered_at  timestamptz,
    failed_at     timestamptz,
    failure       text,
    version       bigint NOT NULL
);
CREATE INDEX sms_reminder ON analytics.sms (reminder_id);

-- How far the projector has read the log.
CREATE TABLE analytics.projection_checkpoint (
    name     text PRIMARY KEY,
    position bigint NOT NULL
);

-- The funnel by day of the call (UTC): calls → transcribed → agreed →
-- reminded (a reminder of the call fired) → SMS delivered (an SMS of such
-- a reminder was delivered). Each stage counts calls, so every number is
-- at most the one before it.
CREATE VIEW analytics.funnel AS
SELECT date_trunc('day', c.started_at AT TIME ZONE 'UTC')::date AS day,
       count(*)                                                   AS calls,
       count(*) FILTER (WHERE c.transcribed_at IS NOT NULL)       AS transcribed,
       count(*) FILTER (WHERE c.transcribed_at IS NOT NULL
                          AND c.consent_decision = 'agreed')      AS agreed,
       count(*) FILTER (WHERE c.transcribed_at IS NOT NULL
                          AND c.consent_decision = 'agreed'
                          AND r.reminded)                         AS reminded,
       count(*) FILTER (WHERE c.transcribed_at IS NOT NULL
                          AND c.consent_decision = 'agreed'
                          AND r.reminded AND r.delivered)         AS sms_delivered
FROM analytics.calls c
LEFT JOIN LATERAL (
    SELECT bool_or(rem.state = 'due') AS reminded,
           bool_or(rem.state = 'due' AND s.status = 'delivered') AS delivered
    FROM analytics.reminders rem
    LEFT JOIN analytics.sms s ON s.reminder_id = rem.reminder_id
    WHERE rem.provider = c.provider AND rem.call_id = c.call_id
) r ON true
GROUP BY 1;
