-- Monthly operations reports (reports/, issue 21), stored once a month is over so a report can
-- be downloaded later exactly as it was generated, even after run-data retention has purged the
-- rows it was computed from. One row per month and tenant ('' is the all-tenant report); the
-- report itself is the JSON of reports.models.MonthlyReport (its ``version`` says which rules
-- made it). ``inputs`` are the ROI inputs it was computed with: a request with other inputs
-- computes afresh rather than showing a stored estimate built on someone else's assumptions.

CREATE TABLE monthly_reports (
    month         text NOT NULL CHECK (month ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    tenant        text NOT NULL DEFAULT '',
    generated_at  timestamptz NOT NULL DEFAULT now(),
    inputs        jsonb NOT NULL DEFAULT '{}'::jsonb,
    report        jsonb NOT NULL,
    PRIMARY KEY (month, tenant)
);
