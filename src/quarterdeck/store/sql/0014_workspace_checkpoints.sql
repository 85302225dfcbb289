-- Workspace checkpoints: a run's files in Postgres, so a run resumed on any replica gets back the
-- workspace its checkpointed conversation describes (runs/workspace_repository.py).
--
-- Contents are blobs keyed by (tenant, sha256 of the raw bytes), compressed: the same content is
-- stored once per tenant, whichever turns and runs hold it, and never shared across tenants (an
-- erasure removes a tenant's blobs whole, and no tenant can learn that another holds a file).

CREATE TABLE workspace_blobs (
    tenant   text NOT NULL,
    sha256   text NOT NULL,
    size     bigint NOT NULL,            -- raw bytes
    codec    text NOT NULL DEFAULT 'zlib',
    data     bytea NOT NULL,             -- compressed
    used_at  timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (tenant, sha256)
);
-- Already compressed: keep TOAST from trying pglz on it again.
ALTER TABLE workspace_blobs ALTER COLUMN data SET STORAGE EXTERNAL;

-- One row per path per capture: turn 0 is the base (the workspace as prepared from its source,
-- also the diff baseline), turn N what turn N's tools changed, written in the transaction that
-- records that turn's tool results. The tree after turn N is the newest row per path up to N.
CREATE TABLE run_workspace_files (
    run_id  text NOT NULL REFERENCES runs (id) ON DELETE CASCADE,
    tenant  text NOT NULL,
    turn    integer NOT NULL,
    path    text NOT NULL,
    kind    text NOT NULL CHECK (kind IN ('file', 'dir', 'symlink', 'deleted')),
    mode    integer NOT NULL DEFAULT 0,
    sha256  text,                        -- a file's blob
    target  text,                        -- a symlink's target text
    size    bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (run_id, turn, path)
);
-- Which runs of a tenant still hold a blob: the garbage collection after erasure and purge.
CREATE INDEX run_workspace_files_blob ON run_workspace_files (tenant, sha256)
    WHERE sha256 IS NOT NULL;

-- Per run: the last turn captured and the compressed bytes its checkpoints carried (the cap).
CREATE TABLE run_workspaces (
    run_id      text PRIMARY KEY REFERENCES runs (id) ON DELETE CASCADE,
    tenant      text NOT NULL,
    turn        integer NOT NULL,
    bytes       bigint NOT NULL,
    updated_at  timestamptz NOT NULL DEFAULT now()
);
