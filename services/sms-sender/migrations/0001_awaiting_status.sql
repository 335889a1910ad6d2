-- SMS handed to the provider whose delivery report is still awaited. Filled
-- by the sender when it records SmsSent, emptied when SmsDelivered or
-- SmsUndelivered is recorded (or the wait is given up).
CREATE TABLE sms.awaiting_status (
    sms_id         uuid PRIMARY KEY,
    message_id     text        NOT NULL,
    phone          text        NOT NULL,
    correlation_id uuid        NOT NULL,
    sent_at        timestamptz NOT NULL,
    checked_at     timestamptz
);
CREATE INDEX awaiting_status_checked ON sms.awaiting_status (checked_at NULLS FIRST);
