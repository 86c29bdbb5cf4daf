-- Sends of offerings, their deliveries, and the suppression list.
-- Conventions as in 0001: BIGINT milliseconds since the epoch, lowercase state words.

-- One scheduled email of an offering. The content is stored here when the send is scheduled
-- (already checked), so editing the file afterwards changes nothing that is under way.
CREATE TABLE sends (
    id                INTEGER PRIMARY KEY,
    offering_id       BIGINT NOT NULL REFERENCES offerings (id),
    status            TEXT   NOT NULL DEFAULT 'scheduled'
                      CHECK (status IN ('scheduled', 'sending', 'paused', 'cancelled', 'done')),
    subject           TEXT   NOT NULL,
    preheader         TEXT,
    html_template     TEXT   NOT NULL,
    text_template     TEXT   NOT NULL,
    source_path       TEXT   NOT NULL,
    send_at           BIGINT NOT NULL,
    created_at        BIGINT NOT NULL,
    -- Fan-out progress: deliveries exist for every confirmed subscriber with an id up to here.
    fanout_cursor     BIGINT NOT NULL DEFAULT 0,
    fanout_done_at    BIGINT,
    finished_at       BIGINT,
    -- Why the send is paused (the owner, or too many failures).
    paused_reason     TEXT,
    -- Message-IDs of this send are <prefix.subscriber_id@domain>: fixed, unique, unguessable.
    message_id_prefix TEXT   NOT NULL
);
CREATE INDEX sends_due ON sends (send_at) WHERE status = 'scheduled';

ALTER TABLE deliveries ADD COLUMN send_id BIGINT REFERENCES sends (id);
-- One delivery per send and subscriber: a repeated fan-out adds nothing.
CREATE UNIQUE INDEX deliveries_one_per_send ON deliveries (send_id, subscriber_id);

-- Addresses never to mail again: a keyed hash (HMAC-SHA-256 with the token key) of the
-- lowercased address, so an erased person leaves no readable trace and an import cannot
-- bring them back.
CREATE TABLE suppressions (
    email_hash TEXT   PRIMARY KEY,
    reason     TEXT   NOT NULL CHECK (reason IN ('erased', 'bounced', 'complained', 'owner')),
    created_at BIGINT NOT NULL
);
