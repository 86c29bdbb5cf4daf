-- Workers claim the oldest due deliveries first: ORDER BY next_attempt_at, id. SQLite's
-- index on next_attempt_at already ends in the rowid (id), so this changes nothing here but
-- says so, and keeps the two dialects' indexes alike (see the PostgreSQL migration).
DROP INDEX deliveries_due;
CREATE INDEX deliveries_due ON deliveries (next_attempt_at, id) WHERE status = 'pending';

-- The per-domain cap counts only recent confirmation emails; a send's deliveries never need
-- this index, and maintaining it cost every one of them an index entry on each write.
DROP INDEX deliveries_by_kind_and_time;
CREATE INDEX deliveries_confirmations_by_time ON deliveries (created_at) WHERE kind = 'confirmation';
