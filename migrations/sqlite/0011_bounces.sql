-- What came back about the mail we sent: bounces (RFC 3464 reports, the common non-standard
-- ones, and providers' events), complaints (RFC 5965 feedback reports) and auto-replies. One
-- row per recipient a report names.
--
-- A report is matched to the delivery it answers (by the VERP tag of the address it came back
-- to, then by the provider's message id, then by the original Message-ID); an unmatched one
-- is kept for the owner to review and acts on nothing. dedup_key makes a report processed
-- once however many ways it arrives: a matched notice is keyed by its delivery and kind (an
-- IMAP poll, a webhook and a manual import of the same bounce are one), an unmatched one by a
-- hash of the report. The raw report is personal data: it is cleared after bounces.keep_days,
-- and every row of a person goes when the person is erased.
CREATE TABLE bounces (
    id            INTEGER PRIMARY KEY,
    received_at   BIGINT NOT NULL,
    source        TEXT   NOT NULL
                  CHECK (source IN ('imap', 'import', 'ses', 'postmark', 'mailgun', 'sendgrid')),
    dedup_key     TEXT   NOT NULL UNIQUE,
    kind          TEXT   NOT NULL
                  CHECK (kind IN ('hard', 'soft', 'delayed', 'complaint', 'auto_reply', 'unknown')),
    recipient     TEXT,
    status        TEXT,
    diagnostic    TEXT,
    delivery_id   BIGINT,
    subscriber_id BIGINT REFERENCES subscribers (id) ON DELETE CASCADE,
    send_id       BIGINT,
    matched_by    TEXT   CHECK (matched_by IN ('verp', 'provider_id', 'message_id')),
    action        TEXT   NOT NULL
                  CHECK (action IN ('suppressed', 'unsubscribed', 'counted', 'none', 'unmatched')),
    raw           TEXT
);
CREATE INDEX bounces_by_time ON bounces (received_at);
CREATE INDEX bounces_by_subscriber ON bounces (subscriber_id, received_at);
CREATE INDEX bounces_by_send ON bounces (send_id, kind);
