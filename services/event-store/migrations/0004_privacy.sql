-- Personal data in an immutable log: the personal fields of each payload
-- are encrypted (AES-256-GCM) with a data key of the contact the event is
-- about; data keys are stored wrapped by the master key. Forgetting a
-- contact deletes their keys: what was encrypted with them can never be read
-- again, by anyone, while the events themselves stay where they are.
--
-- contact_ref is HMAC-SHA256(index key, contact) — never the number itself.
CREATE TABLE eventlog.contact_keys (
    contact_ref bytea       NOT NULL,
    generation  bigint      NOT NULL,
    wrapped_key bytea       NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (contact_ref, generation)
);

CREATE TABLE eventlog.forgotten_contacts (
    contact_ref  bytea PRIMARY KEY,
    forgotten_at timestamptz NOT NULL DEFAULT now(),
    requested_by text        NOT NULL
);

GRANT SELECT, INSERT, DELETE ON eventlog.contact_keys TO callflow_eventlog_writer;
GRANT SELECT, INSERT, UPDATE ON eventlog.forgotten_contacts TO callflow_eventlog_writer;
