-- The outbox's claim index covered every row not 'sent' (0004). Since 0025 that includes
-- 'suppressed' rows: final, never claimable, one more for every page a maintenance window
-- silenced, kept as the incident's history. Every claim walked past all of them in the index
-- (and past 'held' rows, which the release sweep finds through their own index). The index now
-- holds only the states a sender may claim; the claim query's conditions name only those states,
-- so Postgres can prove the predicate and use it.
DROP INDEX notifications_undelivered;
CREATE INDEX notifications_claimable ON notifications (id)
    WHERE status IN ('pending', 'failed', 'sending');
