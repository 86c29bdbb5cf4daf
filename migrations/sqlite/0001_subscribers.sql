-- The subscriber side of Sangha and the delivery outbox.
--
-- Conventions (the same in migrations/postgres, which must keep the same numbered names):
-- * every time is a BIGINT of milliseconds since the Unix epoch, UTC, so both dialects compare
--   and sort times the same way and no column depends on a server time zone;
-- * states are lowercase words guarded by CHECK constraints (see src/domain/status.rs);
-- * flags are BIGINT 0/1, which both dialects read back as the same integer type;
-- * ids are 64-bit integers.

CREATE TABLE offerings (
    id          INTEGER PRIMARY KEY,
    slug        TEXT    NOT NULL UNIQUE,
    name        TEXT    NOT NULL,
    description TEXT    NOT NULL DEFAULT '',
    kind        TEXT    NOT NULL CHECK (kind IN ('newsletter', 'course')),
    public      BIGINT  NOT NULL DEFAULT 1,
    -- 0 once the offering is gone from config.toml: kept so history stays readable.
    active      BIGINT  NOT NULL DEFAULT 1,
    created_at  BIGINT  NOT NULL
);

CREATE TABLE subscribers (
    id                   INTEGER PRIMARY KEY,
    email                TEXT    NOT NULL UNIQUE,
    name                 TEXT,
    timezone             TEXT,
    created_at           BIGINT  NOT NULL,
    -- When the last confirmation email was queued: at most one per cooldown per address.
    confirmation_sent_at BIGINT
);

CREATE TABLE subscriptions (
    subscriber_id   BIGINT NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    offering_id     BIGINT NOT NULL REFERENCES offerings (id),
    status          TEXT   NOT NULL CHECK (status IN ('pending', 'confirmed', 'unsubscribed')),
    created_at      BIGINT NOT NULL,
    updated_at      BIGINT NOT NULL,
    confirmed_at    BIGINT,
    unsubscribed_at BIGINT,
    PRIMARY KEY (subscriber_id, offering_id)
);
-- Fan-out walks the confirmed subscribers of one offering in id order.
CREATE INDEX subscriptions_by_offering ON subscriptions (offering_id, status, subscriber_id);

-- What a person agreed to, when, from where, and to which words (a SHA-256 of the text shown).
CREATE TABLE consents (
    id            INTEGER PRIMARY KEY,
    subscriber_id BIGINT NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    -- signup, confirm, import, preferences (changed on the preferences page), unsubscribe.
    action        TEXT   NOT NULL
                  CHECK (action IN ('signup', 'confirm', 'import', 'preferences', 'unsubscribe')),
    at            BIGINT NOT NULL,
    ip            TEXT,
    user_agent    TEXT,
    -- Offering slugs separated by ';', as asked for (signup) or as confirmed (confirm).
    offerings     TEXT   NOT NULL,
    text_hash     TEXT   NOT NULL,
    -- Where it came from: 'form', 'api', 'email' (a link in an email), 'owner' (the CLI),
    -- or the source an import named.
    source        TEXT   NOT NULL
);
CREATE INDEX consents_by_subscriber ON consents (subscriber_id, at);

-- The outbox: one row per message to one person. Workers claim pending rows whose time has
-- come by setting a lease; a row whose lease ran out is claimed again, so a crash loses nothing.
-- message_id is fixed here, so a retry after an ambiguous failure carries the same Message-ID.
CREATE TABLE deliveries (
    id              INTEGER PRIMARY KEY,
    kind            TEXT   NOT NULL CHECK (kind IN ('confirmation', 'send')),
    subscriber_id   BIGINT NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    consent_id      BIGINT REFERENCES consents (id) ON DELETE CASCADE,
    message_id      TEXT   NOT NULL UNIQUE,
    status          TEXT   NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'sent', 'failed', 'suppressed', 'skipped', 'cancelled')),
    attempts        BIGINT NOT NULL DEFAULT 0,
    next_attempt_at BIGINT NOT NULL,
    lease_until     BIGINT,
    leased_by       TEXT,
    last_error      TEXT,
    smtp_reply      TEXT,
    created_at      BIGINT NOT NULL,
    sent_at         BIGINT
);
CREATE INDEX deliveries_due ON deliveries (next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_by_subscriber ON deliveries (subscriber_id);
