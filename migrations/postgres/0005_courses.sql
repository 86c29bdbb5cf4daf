-- Courses: lessons stored as sends, and where each person is in each course.
-- Conventions as in 0001: BIGINT milliseconds since the epoch, lowercase state words.

-- A lesson is a send of a course offering with the day it belongs to. It is never fanned out
-- (fanout_done_at is set when it is stored): the course step adds one delivery per person
-- when their day comes, so deliveries keep their unique (send_id, subscriber_id).
-- A lesson file that changes is stored again as a new version; the old version is marked
-- superseded (its deliveries under way keep their content), and only the current version of
-- a day is used for new deliveries. A lesson whose file is removed is cancelled.
ALTER TABLE sends ADD COLUMN lesson_day BIGINT;
-- SHA-256 of the lesson's subject, preheader and bodies: tells a changed file from a touched one.
ALTER TABLE sends ADD COLUMN lesson_hash TEXT;
ALTER TABLE sends ADD COLUMN lesson_superseded_at BIGINT;
-- One current version per course day, even with two schedulers reading the folder at once.
CREATE UNIQUE INDEX sends_one_current_lesson ON sends (offering_id, lesson_day)
    WHERE lesson_day IS NOT NULL AND lesson_superseded_at IS NULL AND status <> 'cancelled';

-- One row per person and course, created by the course step once their subscription is
-- confirmed. Lesson N is due at local_time on anchor_date + N days in the person's zone
-- (moved to the next allowed weekday); day 0, the welcome, is due at started_at.
--
--   active ──pause──► paused ──resume──► active      (resume shifts anchor_date by the days
--     │ └──no lesson left──► finished                  spent paused)
--     └──subscription no longer confirmed──► left ──confirmed again──► active
CREATE TABLE course_progress (
    subscriber_id BIGINT NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    offering_id   BIGINT NOT NULL REFERENCES offerings (id),
    state         TEXT   NOT NULL CHECK (state IN ('active', 'paused', 'left', 'finished')),
    -- The confirmation the course counts from.
    started_at    BIGINT NOT NULL,
    -- 'YYYY-MM-DD': the person's local day 0, moved on by pauses.
    anchor_date   TEXT   NOT NULL,
    -- The last lesson day handled (sent, or skipped as missed); NULL before the first.
    last_day      BIGINT,
    -- The next lesson and when it is due; NULL when paused, left or finished.
    next_day      BIGINT,
    next_at       BIGINT,
    -- When the course was paused (or the person left), and finished.
    paused_at     BIGINT,
    finished_at   BIGINT,
    updated_at    BIGINT NOT NULL,
    -- Bumped by every change: a change computed from an older read is refused, so two
    -- schedulers (or a scheduler and a pause) never both move the same person on.
    version       BIGINT NOT NULL DEFAULT 0,
    PRIMARY KEY (subscriber_id, offering_id)
);
-- The course step looks for active rows whose next lesson is due.
CREATE INDEX course_progress_due ON course_progress (next_at) WHERE state = 'active';
CREATE INDEX course_progress_by_offering ON course_progress (offering_id, state);
