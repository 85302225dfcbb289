-- Tool calls the policy gate held for an operator's decision (require_approval).
CREATE TABLE run_approvals (
    id            text PRIMARY KEY,
    run_id        text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    tenant        text NOT NULL,
    tool_use_id   text NOT NULL,
    tool          text NOT NULL,
    input         jsonb NOT NULL,
    rule_id       text NOT NULL,
    severity      text NOT NULL,
    reason        text NOT NULL,
    status        text NOT NULL DEFAULT 'pending'
                  CHECK (status IN ('pending', 'approved', 'rejected', 'expired')),
    requested_at  timestamptz NOT NULL DEFAULT now(),
    expires_at    timestamptz NOT NULL,
    decided_at    timestamptz,
    decided_by    text,
    note          text,
    UNIQUE (run_id, tool_use_id)
);
CREATE INDEX run_approvals_pending ON run_approvals (tenant, requested_at) WHERE status = 'pending';
