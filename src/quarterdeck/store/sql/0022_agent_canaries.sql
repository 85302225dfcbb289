-- Agent-configuration canaries (issue 20): a share of new runs of one agent type gets a candidate
-- configuration (model, system prompt, turn limit, ...), and the two arms' runs are compared.
-- A canary is a rollout of kind 'agent-config' (same table, state machine, events, promote and
-- abort); its target is 'agent:<type>', its image the candidate's configuration version, and its
-- traffic is 'runs' (the weight is the share of new runs, decided at submission).
ALTER TABLE rollouts ADD COLUMN kind text NOT NULL DEFAULT 'deployment'
    CHECK (kind IN ('deployment', 'agent-config'));
ALTER TABLE rollouts DROP CONSTRAINT rollouts_traffic_mode_check;
ALTER TABLE rollouts ADD CONSTRAINT rollouts_traffic_mode_check
    CHECK (traffic_mode IN ('nginx', 'replicas', 'runs'));
-- What each API replica's router reads every few seconds: the newest canary per agent type.
CREATE INDEX rollouts_agent_config ON rollouts (target, created_at DESC)
    WHERE kind = 'agent-config';

-- Every run records the configuration version it ran with ('<type>@<hash of the effective
-- agent type>'); a run enrolled in a canary also records which canary and which arm, so the
-- controller compares exactly the runs that were routed, however long they take to finish.
ALTER TABLE runs ADD COLUMN config_version text;
ALTER TABLE runs ADD COLUMN canary_id text;
ALTER TABLE runs ADD COLUMN canary_arm text CHECK (canary_arm IN ('stable', 'candidate'));
CREATE INDEX runs_canary ON runs (canary_id, canary_arm) WHERE canary_id IS NOT NULL;
