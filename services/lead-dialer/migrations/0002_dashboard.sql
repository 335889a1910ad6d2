-- The partner dashboard's read model: one row per web lead, built only from
-- the events of its stream `lead-<id>` (and ContactForgotten), so
-- `lead-dialer rebuild` can empty and replay it. Written only by
-- `dashboard::Dashboard` (src/dashboard.rs).

CREATE TABLE lead_dialer.dashboard_leads (
    lead_id        uuid        PRIMARY KEY,
    -- When the lead was received (LeadReceived's occurred_at, else when the
    -- store recorded it), and that instant's calendar day in the dashboard's
    -- zone (LEAD_DASHBOARD_TIME_ZONE). The day is fixed when the row is
    -- written: after changing the zone, rebuild.
    received_at    timestamptz NOT NULL,
    day            date        NOT NULL,
    partner_id     text        NOT NULL,
    site           text        NOT NULL,
    currency       text        NOT NULL,
    amount_minor   bigint      NOT NULL,
    order_id       text        NOT NULL,
    -- Personal: `[forgotten]` once the contact is forgotten.
    name           text        NOT NULL,
    phone          text        NOT NULL,
    -- The client's contact stream (kit::contacts), to find the row when
    -- they are forgotten; NULL when the number is not one, or once forgotten
    -- (the stream name is a pseudonym of the number).
    contact_stream text,
    state          text        NOT NULL
        CHECK (state IN ('received', 'rejected', 'confirmed', 'closed')),
    -- Set while the lead waits for a person (LeadNeedsManualProcessing),
    -- cleared when it is confirmed or closed.
    manual_since   timestamptz,
    manual_reason  text,
    manual_detail  text,
    calls_stopped  boolean     NOT NULL DEFAULT false,
    -- Stream version of the last event applied: an event applies only when
    -- it is newer, so applying one again changes nothing.
    version        bigint      NOT NULL
);

-- Summary: a range of days, maybe of one partner or site.
CREATE INDEX dashboard_leads_day ON lead_dialer.dashboard_leads (day);
CREATE INDEX dashboard_leads_partner_day ON lead_dialer.dashboard_leads (partner_id, day);
CREATE INDEX dashboard_leads_site_day ON lead_dialer.dashboard_leads (site, day);
-- Manual queue: the few waiting leads, oldest first.
CREATE INDEX dashboard_leads_manual ON lead_dialer.dashboard_leads (manual_since, lead_id)
    WHERE manual_since IS NOT NULL;
-- Forgetting a contact.
CREATE INDEX dashboard_leads_contact ON lead_dialer.dashboard_leads (contact_stream)
    WHERE contact_stream IS NOT NULL;

-- How far the projections of this schema have read the log
-- (kit::projection).
CREATE TABLE IF NOT EXISTS lead_dialer.projection_checkpoint (
    name     text PRIMARY KEY,
    position bigint NOT NULL
);
