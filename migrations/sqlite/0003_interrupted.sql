-- Deliveries whose worker died while holding them. A claim that finds a lease still set (the
-- previous holder never recorded a result) counts one interruption: that earlier attempt may
-- or may not have reached the server, so the recipient may get the message twice (with the
-- same Message-ID). `sends show` reports the count as possible duplicates.
ALTER TABLE deliveries ADD COLUMN interrupted BIGINT NOT NULL DEFAULT 0;

-- The per-domain cap on confirmation emails counts recent confirmations.
CREATE INDEX deliveries_by_kind_and_time ON deliveries (kind, created_at);
