-- Fewer index entries per write of a delivery row (see the PostgreSQL migration, which also
-- leaves room on each page for HOT updates; SQLite has no such setting).
--
-- A Message-ID is unique by how it is made, so the table no longer checks it row by row.
-- A confirmation's is 128 random bits; a send's or a lesson's is `<prefix.subscriber_id@domain>`,
-- where the prefix (80 random bits) is unique among sends (the index below) and
-- deliveries_one_per_send allows one delivery per send and subscriber. See the PostgreSQL
-- migration for what the index cost.
--
-- SQLite cannot drop a UNIQUE written into CREATE TABLE, so the table is copied into a new
-- one without it (ids kept), and its indexes are made again. Nothing refers to deliveries.
CREATE TABLE deliveries_new (
    id              INTEGER PRIMARY KEY,
    kind            TEXT   NOT NULL CHECK (kind IN ('confirmation', 'send')),
    subscriber_id   BIGINT NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    consent_id      BIGINT REFERENCES consents (id) ON DELETE CASCADE,
    message_id      TEXT   NOT NULL,
    status          TEXT   NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed', 'suppressed', 'skipped', 'cancelled')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,
    leased_by       TEXT,
    last_error      TEXT,
    smtp_reply      TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT,
    send_id         BIGINT REFERENCES sends (id),
    interrupted     BIGINT NOT NULL DEFAULT 0
);
INSERT INTO deliveries_new
    (id, kind, subscriber_id, consent_id, message_id, status, attempts, next_attempt_at,
     lease_until, leased_by, last_error, smtp_reply, created_at, sent_at, send_id, interrupted)
SELECT id, kind, subscriber_id, consent_id, message_id, status, attempts, next_attempt_at,
       lease_until, leased_by, last_error, smtp_reply, created_at, sent_at, send_id, interrupted
FROM deliveries;
DROP TABLE deliveries;
ALTER TABLE deliveries_new RENAME TO deliveries;

CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE status = 'pending';
CREATE INDEX deliveries_by_subscriber ON deliveries (subscriber_id);
CREATE UNIQUE INDEX deliveries_one_per_send ON deliveries (send_id, subscriber_id);
CREATE INDEX deliveries_confirmations_by_time ON deliveries (created_at) WHERE kind = 'confirmation';

CREATE UNIQUE INDEX sends_one_per_message_id_prefix ON sends (message_id_prefix);
