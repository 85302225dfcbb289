-- Every decision of the leader's autoscaler (scaling/), holds included: an autoscaler is judged
-- after the fact ("why did it not scale out at 14:02?"), so each row keeps the policy's factors
-- (every input and intermediate it used), the reason a person reads, and what was done about it
-- (applied: the replica count written, null when nothing was; error: why an action failed).
-- Pages are read newest first by id (the primary key); the purge finds old rows by time.

CREATE TABLE scaling_decisions (
    id         bigserial PRIMARY KEY,
    at         timestamptz NOT NULL DEFAULT now(),
    policy     text NOT NULL,
    mode       text NOT NULL,
    target     text NOT NULL,
    current    integer NOT NULL,
    desired    integer NOT NULL,
    applied    integer,
    direction  text NOT NULL CHECK (direction IN ('up', 'down', 'hold')),
    reason     text NOT NULL,
    factors    jsonb NOT NULL DEFAULT '{}'::jsonb,
    error      text
);
CREATE INDEX scaling_decisions_at ON scaling_decisions (at);
