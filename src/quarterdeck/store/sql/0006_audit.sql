-- The tamper-evident, encrypted audit log (security/audit; design in security/audit/README.md).
--
-- An event's hashed record is the canonical JSON
--   {"body":<body>,"head":{"actor":..,"event_type":..,"session_id":..,"severity":..,
--    "timestamp":..},"prev_hash":"<hex>","seq":N,"tenant":"T","v":1}
-- The head fields are stored as columns (they are what searches filter on), the body as its
-- canonical bytes. Nothing is stored twice: verification rebuilds the record from exactly these
-- columns (repository.PREFIX_SQL), so changing any of them changes the hash. One chain per tenant,
-- seq from 1 without gaps.

-- The head of each tenant's chain. Appenders lock this row (SELECT ... FOR UPDATE) for the length
-- of one batch, which is what keeps two processes from forking a chain. ``key_id`` is the data
-- key new sensitive payloads are encrypted with (NULL: none yet, or the tenant was shredded).
CREATE TABLE audit_chain_heads (
    tenant      text PRIMARY KEY,
    seq         bigint NOT NULL DEFAULT 0 CHECK (seq >= 0),
    hash        bytea NOT NULL DEFAULT decode(repeat('00', 32), 'hex'),  -- genesis
    key_id      integer,
    updated_at  timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE audit_events (
    tenant      text NOT NULL,
    seq         bigint NOT NULL CHECK (seq > 0),
    ts          timestamptz NOT NULL,
    event_type  text NOT NULL,
    actor       text,
    session_id  text,            -- the run id for run and tool events
    severity    text,            -- the attached anomaly's severity; NULL when there is none
    body        bytea NOT NULL,  -- canonical JSON: every other field, sensitive part encrypted
    hash        bytea NOT NULL,  -- SHA-256 of the record
    PRIMARY KEY (tenant, seq)
);
-- Time-range searches and the cross-tenant, newest-first listing (cursor = ts, tenant, seq).
CREATE INDEX audit_events_ts ON audit_events (ts, tenant, seq);
CREATE INDEX audit_events_session ON audit_events (session_id) WHERE session_id IS NOT NULL;
CREATE INDEX audit_events_anomalies ON audit_events (severity, ts) WHERE severity IS NOT NULL;

-- Evidence is never edited; it is only deleted by the retention purge, which says so with a
-- transaction-local setting. Anyone who can drop these triggers can also edit rows: that is
-- what verification detects. The triggers stop accidents, not attackers.
CREATE FUNCTION audit_events_guard() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' AND current_setting('quarterdeck.audit_purge', true) = 'on' THEN
        RETURN OLD;
    END IF;
    RAISE EXCEPTION 'audit_events is append-only (% refused)', TG_OP;
END;
$$;
CREATE TRIGGER audit_events_append_only BEFORE UPDATE OR DELETE ON audit_events
    FOR EACH ROW EXECUTE FUNCTION audit_events_guard();

-- Signed statements "the chain of <tenant> had <count> new events and ended at <seq, hash>
-- at <created_at>". The signed bytes are rebuilt from these columns on verification, so a
-- changed column is a bad signature. ``prev_digest`` chains each checkpoint to the previous
-- sealing one (count > 0). A tenant keeps at most one trailing idle checkpoint (count = 0).
CREATE TABLE audit_checkpoints (
    id               bigserial PRIMARY KEY,
    tenant           text NOT NULL,
    seq              bigint NOT NULL CHECK (seq >= 0),
    head_hash        bytea NOT NULL,
    count            bigint NOT NULL CHECK (count >= 0),
    created_at       timestamptz NOT NULL,
    prev_digest      bytea NOT NULL,
    key_fingerprint  text NOT NULL,
    signature        bytea NOT NULL
);
CREATE INDEX audit_checkpoints_tenant ON audit_checkpoints (tenant, id);
-- The retention purge looks for the newest checkpoint written before a cutoff.
CREATE INDEX audit_checkpoints_created ON audit_checkpoints (tenant, created_at);

-- Where a tenant's chain starts after a retention purge: the head of the signed checkpoint the
-- purge cut at. Signed too, so an anchor cannot be invented to hide a deletion.
CREATE TABLE audit_anchors (
    tenant           text NOT NULL,
    seq              bigint NOT NULL CHECK (seq > 0),
    head_hash        bytea NOT NULL,
    checkpoint_id    bigint NOT NULL,
    purged           bigint NOT NULL,
    created_at       timestamptz NOT NULL,
    key_fingerprint  text NOT NULL,
    signature        bytea NOT NULL,
    PRIMARY KEY (tenant, seq)
);

-- Per-tenant data keys, wrapped (AES-GCM) by the master key. Shredding sets ``wrapped`` to NULL:
-- the ciphertexts stay (the chain covers them) but can never be read again.
CREATE TABLE audit_data_keys (
    tenant              text NOT NULL,
    key_id              integer NOT NULL CHECK (key_id > 0),
    wrapped             bytea,
    master_fingerprint  text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    shredded_at         timestamptz,
    PRIMARY KEY (tenant, key_id),
    CONSTRAINT audit_data_keys_shredded CHECK ((wrapped IS NULL) = (shredded_at IS NOT NULL))
);

-- Per-tenant retention; tenants without a row use QUARTERDECK_AUDIT_RETENTION.
CREATE TABLE audit_retention (
    tenant             text PRIMARY KEY,
    retention_seconds  double precision NOT NULL CHECK (retention_seconds > 0),
    updated_at         timestamptz NOT NULL DEFAULT now()
);
