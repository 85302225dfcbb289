-- The health monitor's emergency scale-up requests made in a process that does not lead the
-- scaler (scaling/handover.py): the health monitor and the scaler have separate elections, so
-- the process that sees the problem is often not the one that may write the replica count.
-- The request waits here for the scaler's leader, which takes it on its next tick (status
-- 'taken', exactly once: UPDATE ... FOR UPDATE SKIP LOCKED) or expires it when it is too old to
-- act on (status 'expired': the health monitor asks again while the problem lasts). The
-- leader's answer is kept with it; the decision it made is a row of scaling_decisions.

CREATE TABLE scaling_requests (
    id            bigserial PRIMARY KEY,
    requested_at  timestamptz NOT NULL,
    reason        text NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'taken', 'expired')),
    settled_at    timestamptz,
    answer        text
);
CREATE INDEX scaling_requests_pending ON scaling_requests (id) WHERE status = 'pending';
CREATE INDEX scaling_requests_requested_at ON scaling_requests (requested_at);
