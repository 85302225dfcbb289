-- Availability for the monthly report (issue 21): what the health monitor saw on each tick, and
-- the maintenance windows that make downtime scheduled.
--
-- health_probes: one row per tick of the leader's health monitor (one leader, so one row per
-- interval across replicas; 8,640 a day at 10 s). A tick covers [at, at + interval_s); time no
-- tick covers is unknown (the leader or the database was away) and the report says so rather
-- than counting it up or down. ``healthy`` is false when a check of severity critical failed;
-- ``failing`` names every failing check, ``critical_failing`` the critical ones; both are NULL
-- rather than empty when none failed, which keeps rows small (a month, 267,840 rows, measured
-- 18 MB with its index; 24 MB with empty arrays). Purged after health_probe_retention_days.
CREATE TABLE health_probes (
    at                timestamptz NOT NULL,
    interval_s        real NOT NULL CHECK (interval_s > 0 AND interval_s <= 86400),
    healthy           boolean NOT NULL,
    failing           text[],
    critical_failing  text[]
);
CREATE INDEX health_probes_at ON health_probes (at);

-- maintenance_windows: scheduled downtime, declared by an operator (platform-wide, no tenant).
-- Downtime inside a window is scheduled; the report subtracts it from the unscheduled downtime
-- and from the period uptime is measured over. ``created_at`` is kept so a window declared
-- after it began is visible as such.
CREATE TABLE maintenance_windows (
    id          text PRIMARY KEY,
    starts_at   timestamptz NOT NULL,
    ends_at     timestamptz NOT NULL,
    reason      text NOT NULL,
    created_by  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    CHECK (ends_at > starts_at)
);
CREATE INDEX maintenance_windows_starts_at ON maintenance_windows (starts_at);
