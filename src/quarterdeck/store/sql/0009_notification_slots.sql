-- Per-channel send schedule shared by every replica: notification rate limits are global, not
-- per process. ``next_at`` is when the channel's next message may go out.
CREATE TABLE notification_slots (
    channel  text PRIMARY KEY,
    next_at  timestamptz NOT NULL
);
