-- API keys (security/auth). A key is stored only as the SHA-256 digest of the whole key; the
-- id is its public 8-character part. Keys are never deleted, only revoked, so the audit trail
-- can always say which key did what. A key's role and tenant never change: to change them,
-- create a new key and revoke the old one.

CREATE TABLE api_keys (
    id          text PRIMARY KEY CHECK (id ~ '^[0-9a-hjkmnp-tv-z]{8}$'),
    prefix      text NOT NULL CHECK (prefix IN ('qd_live_', 'qd_dev_')),
    digest      bytea NOT NULL CHECK (octet_length(digest) = 32),
    name        text NOT NULL CHECK (length(name) BETWEEN 1 AND 200),
    tenant      text NOT NULL,
    role        text NOT NULL CHECK (role IN ('admin', 'operator', 'submitter', 'auditor')),
    created_at  timestamptz NOT NULL DEFAULT now(),
    created_by  text,
    expires_at  timestamptz,
    revoked_at  timestamptz,
    revoked_by  text,
    -- The same rules as permissions.assignment_problem, so no path around the service can
    -- store an all-tenant submitter or a single-tenant admin.
    CHECK (role <> 'admin' OR tenant = '*'),
    CHECK (role <> 'submitter' OR tenant <> '*'),
    CHECK (tenant = '*' OR tenant ~ '^[A-Za-z0-9][A-Za-z0-9_.:\-]{0,63}$')
);

CREATE INDEX api_keys_tenant_created ON api_keys (tenant, created_at DESC);
