-- What the owner is told (site.owner_email): a send that paused itself, a send whose bounces
-- or complaints passed their share, deliveries due for longer than alerts.queue_late_minutes.
-- One row per event: key names the event, so raising it again inserts nothing (a paused
-- send's key counts its pauses; a late queue's key is 'queue_late' while it is
-- late, and takes its row id when it catches up, so the next delay is a new event). The row
-- is also the alert's outbox: emailed_at is set once the owner's relay took it, and a failed
-- attempt waits until next_attempt_at. Alerts name sends and counts, never a person.
CREATE TABLE alerts (
    id              INTEGER PRIMARY KEY,
    key             TEXT   NOT NULL UNIQUE,
    kind            TEXT   NOT NULL
                    CHECK (kind IN ('send_paused', 'send_bounces', 'send_complaints', 'queue_late')),
    send_id         BIGINT,
    summary         TEXT   NOT NULL,
    detail          TEXT   NOT NULL,
    raised_at       BIGINT NOT NULL,
    cleared_at      BIGINT,
    emailed_at      BIGINT,
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,
    last_error      TEXT
);
CREATE INDEX alerts_to_email ON alerts (next_attempt_at) WHERE emailed_at IS NULL;
CREATE INDEX alerts_by_time ON alerts (raised_at);
