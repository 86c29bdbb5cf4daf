-- Links act on one row, never on whoever holds its id later.
--
-- Every link in an email names a subscriber (unsubscribe, preferences) or a signup's consent
-- record (confirm) by id. SQLite's INTEGER PRIMARY KEY without AUTOINCREMENT hands out
-- max(id) + 1, so after the newest subscriber was erased the next signup got the same id, and
-- the erased person's links opened, changed or erased the new person. Two defences:
--
-- * link_secret: a random number stored with each subscriber and consent record and signed
--   into its links (src/domain/token.rs). A lookup by link matches id AND secret, so the link
--   of a deleted row matches nothing, whatever reuses its id (this table, a restore from a
--   backup, a future migration). Rows that exist now keep secret 0, which is what links
--   signed before this migration carry, so the emails already in inboxes keep working; every
--   new row gets a non-zero secret (random() | 1), which such an old link can never match.
-- * AUTOINCREMENT, so ids are not handed out twice in the first place.
--
-- SQLite can add neither to an existing table, so both tables are copied into new ones (ids
-- kept) and their indexes made again. Other tables refer to them: Store::migrate runs the
-- migrations with foreign keys off (a DROP TABLE would otherwise cascade into them) and
-- checks every reference with PRAGMA foreign_key_check before turning them on again.
CREATE TABLE subscribers_new (
    id                   INTEGER PRIMARY KEY AUTOINCREMENT,
    email                TEXT    NOT NULL UNIQUE,
    name                 TEXT,
    timezone             TEXT,
    created_at           BIGINT  NOT NULL,
    -- When the last confirmation email was queued: at most one per cooldown per address.
    confirmation_sent_at BIGINT,
    link_secret          BIGINT  NOT NULL DEFAULT (random() | 1)
);
INSERT INTO subscribers_new (id, email, name, timezone, created_at, confirmation_sent_at, link_secret)
SELECT id, email, name, timezone, created_at, confirmation_sent_at, 0 FROM subscribers;
DROP TABLE subscribers;
ALTER TABLE subscribers_new RENAME TO subscribers;

CREATE TABLE consents_new (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    subscriber_id BIGINT NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    action        TEXT   NOT NULL
                  CHECK (action IN ('signup', 'confirm', 'import', 'preferences', 'unsubscribe')),
    at            BIGINT NOT NULL,
    ip            TEXT,
    user_agent    TEXT,
    offerings     TEXT   NOT NULL,
    text_hash     TEXT   NOT NULL,
    source        TEXT   NOT NULL,
    link_secret   BIGINT NOT NULL DEFAULT (random() | 1)
);
INSERT INTO consents_new (id, subscriber_id, action, at, ip, user_agent, offerings, text_hash, source, link_secret)
SELECT id, subscriber_id, action, at, ip, user_agent, offerings, text_hash, source, 0 FROM consents;
DROP TABLE consents;
ALTER TABLE consents_new RENAME TO consents;
CREATE INDEX consents_by_subscriber ON consents (subscriber_id, at);
