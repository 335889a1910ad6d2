-- Calls the dialer asked a provider to place: the guard that keeps one
-- attempt from being dialled twice (several replicas, redeliveries, a crash
-- between the provider's answer and the event), and the map from a
-- provider's call id back to the lead, for result webhooks that name only
-- the call.
CREATE TABLE lead_dialer.dials (
    lead_id          uuid        NOT NULL,
    attempt          integer     NOT NULL,
    dialer           text        NOT NULL,
    -- 'dialing' while the provider is asked; 'placed' once it answered with
    -- a call id.
    state            text        NOT NULL CHECK (state IN ('dialing', 'placed')),
    provider_call_id text,
    claimed_at       timestamptz NOT NULL,
    PRIMARY KEY (lead_id, attempt)
);
CREATE UNIQUE INDEX dials_provider_call ON lead_dialer.dials (dialer, provider_call_id);

-- Leads whose creation in the CRM was begun. Bitrix24 has no idempotency
-- key: a lead found here without its LeadCreatedInCrm may have been added
-- by a try that never got its answer, so it is looked up (by ORIGIN_ID)
-- before it is added again.
CREATE TABLE lead_dialer.crm_claims (
    lead_id    uuid PRIMARY KEY,
    claimed_at timestamptz NOT NULL DEFAULT now()
);
