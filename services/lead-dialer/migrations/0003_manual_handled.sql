-- Who took care of a lead of the manual queue (LeadManuallyHandled): the
-- newest handling, kept when the lead leaves the queue and when it comes
-- back to it (a later LeadNeedsManualProcessing). NULL while nobody marked
-- it handled. Like every column of the table, rebuilt from the log by
-- `lead-dialer rebuild`.
ALTER TABLE lead_dialer.dashboard_leads
    ADD COLUMN handled_at   timestamptz,
    ADD COLUMN handled_by   text,
    -- The operator's words, as recorded in the event (not personal data:
    -- see LeadManuallyHandled.note).
    ADD COLUMN handled_note text;
