-- Browser sessions of the web dashboard (/ui). A row stands for "the holder of this cookie
-- signed in with key key_id"; the key is re-checked on every request, so revoking it ends
-- its sessions at once. Only the SHA-256 of the cookie's token is stored.

CREATE TABLE ui_sessions (
    id          text PRIMARY KEY,
    key_id      text NOT NULL,
    csrf        text NOT NULL,
    created_at  timestamptz NOT NULL DEFAULT now(),
    expires_at  timestamptz NOT NULL
);
CREATE INDEX ui_sessions_key ON ui_sessions (key_id);
CREATE INDEX ui_sessions_expires ON ui_sessions (expires_at);
