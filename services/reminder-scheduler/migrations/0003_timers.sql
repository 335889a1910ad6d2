-- The projection of other services' durable timers (streams `timer-<id>`,
-- callflow.timers.v1): one row per timer, rebuildable by replaying the log.
-- As with reminders, rows change only by applying events, each guarded by
-- the stream version it reflects.
CREATE TABLE scheduler.timers (
    -- Derived from owner and key, so (owner, key) is unique through it.
    timer_id       uuid PRIMARY KEY,
    owner          text        NOT NULL,
    key            text        NOT NULL,
    purpose        text        NOT NULL,
    subject        text        NOT NULL DEFAULT '',
    due_at         timestamptz NOT NULL,
    -- The owner's data, opaque here, returned in TimerFired.
    data           text        NOT NULL DEFAULT '',
    -- Timers never expire: a timer due while the scheduler was down fires
    -- late, because its owner waits for it.
    state          text        NOT NULL CHECK (state IN ('pending', 'fired', 'cancelled')),
    -- The flow the timer belongs to, carried to TimerFired.
    correlation_id uuid        NOT NULL,
    version        bigint      NOT NULL,
    updated_at     timestamptz NOT NULL DEFAULT now()
);

-- The timers loop: only pending timers, by due time.
CREATE INDEX timers_pending_due ON scheduler.timers (due_at) WHERE state = 'pending';
