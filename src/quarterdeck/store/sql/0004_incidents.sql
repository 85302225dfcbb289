-- Incidents, their append-only timeline, and the notification outbox.
--
-- An incident is keyed for deduplication by ``dedup_key`` while it is unresolved: the partial
-- unique index lets the same key open a fresh incident after the previous one was resolved, but
-- never two unresolved ones at once (two replicas receiving the same alert agree on one row).

CREATE TABLE incidents (
    id                   text PRIMARY KEY,
    service              text NOT NULL,
    severity             text NOT NULL CHECK (severity IN ('info', 'low', 'medium', 'high',
                                                           'critical')),
    title                text NOT NULL,
    description          text NOT NULL DEFAULT '',
    affected_components  jsonb NOT NULL DEFAULT '[]'::jsonb,
    suggested_actions    jsonb NOT NULL DEFAULT '[]'::jsonb,
    details              jsonb NOT NULL DEFAULT '{}'::jsonb,
    status               text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'acknowledged',
                                                                        'resolved')),
    source               text NOT NULL CHECK (source IN ('health_check', 'alertmanager', 'manual',
                                                         'security')),
    dedup_key            text NOT NULL,
    fingerprint          text,
    occurrences          integer NOT NULL DEFAULT 1,
    opened_at            timestamptz NOT NULL DEFAULT now(),
    last_seen_at         timestamptz NOT NULL DEFAULT now(),
    acknowledged_at      timestamptz,
    acknowledged_by      text,
    resolved_at          timestamptz,
    resolved_by          text CHECK (resolved_by IN ('auto', 'human', 'alertmanager')),
    resolution_note      text,
    escalated_at         timestamptz,
    -- A resolved incident always says when and by whom; an unresolved one says neither.
    CONSTRAINT incidents_resolution_consistent CHECK (
        (status = 'resolved') = (resolved_at IS NOT NULL AND resolved_by IS NOT NULL)),
    CONSTRAINT incidents_resolved_after_opened CHECK (resolved_at IS NULL OR resolved_at >= opened_at)
);

CREATE UNIQUE INDEX incidents_open_dedup_key ON incidents (dedup_key) WHERE status <> 'resolved';
CREATE INDEX incidents_status_opened ON incidents (status, opened_at);
CREATE INDEX incidents_resolved_at ON incidents (resolved_at) WHERE resolved_at IS NOT NULL;
CREATE INDEX incidents_fingerprint ON incidents (fingerprint) WHERE fingerprint IS NOT NULL;

CREATE TABLE incident_events (
    id           bigserial PRIMARY KEY,
    incident_id  text NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    ts           timestamptz NOT NULL DEFAULT clock_timestamp(),
    type         text NOT NULL,
    data         jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX incident_events_incident ON incident_events (incident_id, id);

-- The timeline is evidence for a post-mortem: an UPDATE is a bug or tampering, so refuse it.
CREATE FUNCTION incident_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'incident_events is append-only';
END;
$$;
CREATE TRIGGER incident_events_no_update BEFORE UPDATE ON incident_events
    FOR EACH ROW EXECUTE FUNCTION incident_events_append_only();

-- The notification outbox and idempotency record. A row is written in the same transaction as
-- the incident change that calls for it ('pending'), claimed by one sender ('sending'), and ends
-- 'sent' or 'failed' (failed rows are retried by the periodic sweep). The unique key is what
-- guarantees a channel never pages twice for one incident.
CREATE TABLE notifications (
    id           bigserial PRIMARY KEY,
    incident_id  text NOT NULL REFERENCES incidents (id) ON DELETE CASCADE,
    channel      text NOT NULL,
    kind         text NOT NULL CHECK (kind IN ('trigger', 'resolve', 'info', 'escalation')),
    status       text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sending', 'sent',
                                                                  'failed')),
    attempts     integer NOT NULL DEFAULT 0,
    last_error   text,
    created_at   timestamptz NOT NULL DEFAULT now(),
    claimed_at   timestamptz,
    sent_at      timestamptz,
    CONSTRAINT notifications_once UNIQUE (incident_id, channel, kind)
);
CREATE INDEX notifications_undelivered ON notifications (id) WHERE status <> 'sent';
