-- Maintenance windows silence paging (issue 21 follow-up): an incident opened during a declared
-- window is still recorded, but its notifications wait in the outbox until the window ends.
--
-- Two new outbox states:
--   'held'        not sent because a maintenance window was active when the sender looked; the
--                 next sweep after every window has ended puts it back to 'pending', and it pages
--                 then, once (the (incident, channel, kind) key still holds).
--   'suppressed'  final: the incident was resolved inside a window before the page went out, so
--                 neither its trigger nor its all-clear is sent. Kept, not deleted, so the
--                 incident's history says why nobody was paged.
-- ``held_by`` names the window (no foreign key: a window may be deleted, the history must stay);
-- it is kept after a release, so a page that went out late says which window delayed it.
-- ``held_until`` is that window's end as known when the row was held (what the API shows as
-- "expected to page"); the release itself re-reads the windows, so an extended or deleted window
-- is honoured.

ALTER TABLE notifications DROP CONSTRAINT notifications_status_check;
ALTER TABLE notifications ADD CONSTRAINT notifications_status_check
    CHECK (status IN ('pending', 'sending', 'sent', 'failed', 'held', 'suppressed'));

ALTER TABLE notifications ADD COLUMN held_by text;
ALTER TABLE notifications ADD COLUMN held_until timestamptz;
ALTER TABLE notifications ADD CONSTRAINT notifications_held_names_window
    CHECK (status NOT IN ('held', 'suppressed') OR held_by IS NOT NULL);

-- The release sweep looks only at held rows; they are few and short-lived.
CREATE INDEX notifications_held ON notifications (id) WHERE status = 'held';
