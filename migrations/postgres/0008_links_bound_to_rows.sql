-- Links act on one row, never on whoever holds its id later (see the SQLite migration).
--
-- Identity columns do not hand out an id twice, but a restore from a backup, or a sequence
-- reset, can: so every link is also signed with a random link_secret stored with its row, and
-- a lookup by link matches id AND secret. Rows that exist now keep secret 0, which is what
-- links signed before this migration carry; every new row gets a non-zero secret (the first
-- 64 bits of a random UUID, with the low bit set).
ALTER TABLE subscribers ADD COLUMN link_secret BIGINT NOT NULL DEFAULT 0;
ALTER TABLE subscribers ALTER COLUMN link_secret
    SET DEFAULT (('x' || left(replace(gen_random_uuid()::text, '-', ''), 16))::bit(64)::bigint | 1);
ALTER TABLE consents ADD COLUMN link_secret BIGINT NOT NULL DEFAULT 0;
ALTER TABLE consents ALTER COLUMN link_secret
    SET DEFAULT (('x' || left(replace(gen_random_uuid()::text, '-', ''), 16))::bit(64)::bigint | 1);
