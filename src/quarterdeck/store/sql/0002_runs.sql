-- Runs, their append-only event timeline, and per-turn checkpoints.

CREATE TABLE runs (
    id                     text PRIMARY KEY,
    tenant                 text NOT NULL DEFAULT 'default',
    agent_type             text NOT NULL,
    operation              text NOT NULL,
    prompt                 text NOT NULL,
    model                  text NOT NULL,
    status                 text NOT NULL DEFAULT 'queued' CHECK (status IN (
        'queued', 'running', 'succeeded', 'failed', 'cancelled', 'timed_out',
        'max_turns', 'budget_exceeded')),
    attempts               integer NOT NULL DEFAULT 0,
    max_attempts           integer NOT NULL DEFAULT 3,
    created_at             timestamptz NOT NULL DEFAULT now(),
    started_at             timestamptz,
    finished_at            timestamptz,
    heartbeat_at           timestamptz,
    input_tokens           bigint NOT NULL DEFAULT 0,
    output_tokens          bigint NOT NULL DEFAULT 0,
    cache_creation_tokens  bigint NOT NULL DEFAULT 0,
    cache_read_tokens      bigint NOT NULL DEFAULT 0,
    cost_usd               numeric(20, 10) NOT NULL DEFAULT 0,
    cost_known             boolean NOT NULL DEFAULT true,
    turns                  integer NOT NULL DEFAULT 0,
    result                 text,
    error                  text,
    idempotency_key        text,
    request_hash           text,
    cancel_requested       boolean NOT NULL DEFAULT false,
    job_id                 bigint,
    worker_id              text,
    params                 jsonb NOT NULL DEFAULT '{}'::jsonb
);

CREATE UNIQUE INDEX runs_idempotency_key ON runs (tenant, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX runs_status ON runs (status);
CREATE INDEX runs_tenant_id ON runs (tenant, id DESC);
CREATE INDEX runs_created_at ON runs (created_at);

CREATE TABLE run_events (
    id       bigserial PRIMARY KEY,
    run_id   text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    ts       timestamptz NOT NULL DEFAULT clock_timestamp(),
    type     text NOT NULL,
    turn     integer,
    data     jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX run_events_run ON run_events (run_id, id);

-- The timeline is append-only: an UPDATE is a bug or tampering, so refuse it outright.
CREATE FUNCTION run_events_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'run_events is append-only';
END;
$$;
CREATE TRIGGER run_events_no_update BEFORE UPDATE ON run_events
    FOR EACH ROW EXECUTE FUNCTION run_events_append_only();

-- One row per completed turn: the conversation so far and what that turn cost. Written in the
-- same transaction as the turn's events and the run's totals, so a resumed run never re-bills.
CREATE TABLE run_turns (
    run_id                 text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    turn                   integer NOT NULL,
    messages               jsonb NOT NULL,
    model                  text NOT NULL,
    input_tokens           bigint NOT NULL DEFAULT 0,
    output_tokens          bigint NOT NULL DEFAULT 0,
    cache_creation_tokens  bigint NOT NULL DEFAULT 0,
    cache_read_tokens      bigint NOT NULL DEFAULT 0,
    cost_usd               numeric(20, 10),
    stop_reason            text,
    created_at             timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (run_id, turn)
);
