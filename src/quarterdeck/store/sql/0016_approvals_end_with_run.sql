-- A tool call held for approval belongs to its run: when the run ends (cancelled, failed, timed
-- out, any terminal status) a request still pending can no longer be acted on, so it ends too,
-- as 'cancelled', in the transaction that ends the run. A trigger, because a run ends through
-- several statements of the run store (finish, cancel, the health monitor's time-out, erasure)
-- and none may forget it; approving it afterwards is then a 409 like any decided request.
ALTER TABLE run_approvals DROP CONSTRAINT run_approvals_status_check;
ALTER TABLE run_approvals ADD CONSTRAINT run_approvals_status_check
    CHECK (status IN ('pending', 'approved', 'rejected', 'expired', 'cancelled'));

CREATE FUNCTION run_approvals_end_with_run() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE run_approvals
       SET status = 'cancelled', decided_at = now(), decided_by = 'run',
           note = 'the run ended ' || NEW.status
     WHERE run_id = NEW.id AND status = 'pending';
    RETURN NULL;
END
$$;

CREATE TRIGGER runs_end_pending_approvals
    AFTER UPDATE OF status ON runs
    FOR EACH ROW
    WHEN (OLD.status IN ('queued', 'running') AND NEW.status NOT IN ('queued', 'running'))
    EXECUTE FUNCTION run_approvals_end_with_run();

-- Runs that ended before this migration leave no request pending either.
UPDATE run_approvals a
   SET status = 'cancelled', decided_at = now(), decided_by = 'run',
       note = 'the run ended ' || r.status
  FROM runs r
 WHERE a.run_id = r.id AND a.status = 'pending' AND r.status NOT IN ('queued', 'running');
