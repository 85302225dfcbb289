-- Progressive delivery (rollouts/, issue 20): one row per rollout holding everything a controller
-- needs to continue it (the frozen spec, the state machine's state, and the actions decided but
-- not yet carried out), so a killed controller or a new leader picks it up where it stopped.
-- pending: the actions (a JSON list, in order) that the leader still has to apply to Kubernetes;
-- an action leaves the list in the same transaction that records it done.
-- traffic_mode: null until the controller has prepared the canary and resolved "auto".
-- split / effective_weight: what the last weight really is (replica ratio) as the actuator said.

CREATE TABLE rollouts (
    id               text PRIMARY KEY,
    target           text NOT NULL,
    image            text NOT NULL,
    strategy         text NOT NULL,
    traffic_mode     text CHECK (traffic_mode IN ('nginx', 'replicas')),
    spec             jsonb NOT NULL,
    spec_hash        text NOT NULL,
    phase            text NOT NULL CHECK (phase IN ('progressing', 'paused', 'inconclusive',
                                                    'soaking', 'completed', 'aborted',
                                                    'rolled_back')),
    step_index       integer NOT NULL,
    step_started_at  timestamptz NOT NULL,
    extensions       integer NOT NULL DEFAULT 0,
    weight           integer NOT NULL,
    pause_reason     text,
    pending          jsonb NOT NULL DEFAULT '[]'::jsonb,
    split            text,
    effective_weight double precision,
    last_analysis    jsonb,
    created_by       text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
-- One live rollout per target: two controllers' worth of weights on one Deployment is a mess no
-- state machine can reason about. The index also settles a race between two API replicas.
CREATE UNIQUE INDEX rollouts_one_live_per_target ON rollouts (target)
    WHERE phase NOT IN ('completed', 'aborted', 'rolled_back');
-- The controller's work list: live rollouts, and finished ones with actions still to apply.
CREATE INDEX rollouts_work ON rollouts (id)
    WHERE phase NOT IN ('completed', 'aborted', 'rolled_back') OR pending <> '[]'::jsonb;

CREATE TABLE rollout_events (
    id          bigserial PRIMARY KEY,
    rollout_id  text NOT NULL REFERENCES rollouts (id) ON DELETE CASCADE,
    at          timestamptz NOT NULL DEFAULT now(),
    kind        text NOT NULL,
    message     text NOT NULL,
    data        jsonb NOT NULL DEFAULT '{}'::jsonb
);
CREATE INDEX rollout_events_rollout ON rollout_events (rollout_id, id);
