-- Sends at a local time of day in each subscriber's own zone, and recurring sends.

-- A recurring schedule: every day, weekday or week at a local time, each occurrence taking the
-- next unused Markdown file of a folder (in name order).
CREATE TABLE recurrences (
    id           INTEGER PRIMARY KEY,
    offering_id  BIGINT NOT NULL REFERENCES offerings (id),
    content_dir  TEXT   NOT NULL,
    every        TEXT   NOT NULL CHECK (every IN ('day', 'weekday', 'week')),
    -- 'HH:MM' in each subscriber's zone.
    local_time   TEXT   NOT NULL,
    -- The local date ('YYYY-MM-DD') of the next occurrence not yet created.
    next_date    TEXT   NOT NULL,
    status       TEXT   NOT NULL DEFAULT 'active'
                 CHECK (status IN ('active', 'finished', 'cancelled')),
    -- Why it stopped, or occurrences skipped because the service was down.
    note         TEXT,
    created_at   BIGINT NOT NULL,
    finished_at  BIGINT
);

-- A local-time send goes out at local_time on local_date in each subscriber's zone (the
-- site's zone for those who gave none). Its send_at is the earliest such moment anywhere.
ALTER TABLE sends ADD COLUMN local_time TEXT;
ALTER TABLE sends ADD COLUMN local_date TEXT;
-- 1: zones whose local time had passed when it was scheduled get it at once; 0: they are
-- skipped (the owner was asked).
ALTER TABLE sends ADD COLUMN send_late BIGINT NOT NULL DEFAULT 0;
ALTER TABLE sends ADD COLUMN recurrence_id BIGINT REFERENCES recurrences (id);
ALTER TABLE sends ADD COLUMN content_file TEXT;
-- One send per occurrence: a restart can never create a second.
CREATE UNIQUE INDEX sends_one_per_occurrence ON sends (recurrence_id, local_date);
-- A file of a recurrence's folder is used once.
CREATE UNIQUE INDEX sends_one_per_file ON sends (recurrence_id, content_file);
