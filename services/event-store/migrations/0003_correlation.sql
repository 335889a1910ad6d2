-- Replaying one flow (a call and everything that followed from it) reads
-- by correlation id.
CREATE INDEX events_correlation ON eventlog.events (correlation_id);
