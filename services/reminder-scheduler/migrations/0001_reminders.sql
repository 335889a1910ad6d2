-- The scheduler's projection of reminder events (streams `reminder-<id>`):
-- one row per reminder, rebuildable by replaying the log. Rows are changed
-- only by applying events, each guarded by the stream version it reflects.
CREATE TABLE scheduler.reminders (
    reminder_id  uuid PRIMARY KEY,
    phone        text        NOT NULL,
    due_at       timestamptz NOT NULL,
    time_zone    text        NOT NULL,
    text         text        NOT NULL,
    state        text        NOT NULL CHECK (state IN ('pending', 'due', 'cancelled', 'expired')),
    attempt      integer     NOT NULL DEFAULT 0,
    source       text        NOT NULL DEFAULT '',
    provider     text        NOT NULL DEFAULT '',
    call_id      text        NOT NULL DEFAULT '',
    scheduled_by text        NOT NULL DEFAULT '',
    -- The flow the reminder belongs to (the call's), carried to what it causes.
    correlation_id uuid      NOT NULL,
    version      bigint      NOT NULL,
    updated_at   timestamptz NOT NULL DEFAULT now()
);

-- The timers: only pending reminders, by due time.
CREATE INDEX reminders_pending_due ON scheduler.reminders (due_at) WHERE state = 'pending';
-- A contact's reminders (opt-outs, List by phone).
CREATE INDEX reminders_phone_due ON scheduler.reminders (phone, due_at);

-- How far the projection has read the log.
CREATE TABLE scheduler.projection_checkpoint (
    name     text PRIMARY KEY,
    position bigint NOT NULL
);
