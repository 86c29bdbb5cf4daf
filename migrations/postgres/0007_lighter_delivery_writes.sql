-- Fewer index entries per write of a delivery row. Every delivery is written three times: by
-- the fan-out, by the claim that leases it and by the record of its outcome. Measured on
-- 200k deliveries of one send, claims and records of 200 alternating as the workers do them
-- (BENCHMARKS.md, step 20).

-- 1. A Message-ID is unique by how it is made, so the table no longer checks it row by row.
-- A confirmation's is 128 random bits; a send's or a lesson's is `<prefix.subscriber_id@domain>`,
-- where the prefix (80 random bits) is unique among sends (the index below) and
-- deliveries_one_per_send allows one delivery per send and subscriber. The unique index was
-- the table's widest, its keys in no useful order, and every write that is not a HOT update
-- added an entry to it. Nothing looks a delivery up by its Message-ID. Without it, fanning
-- out the 200k took 4.2 s instead of 5.0–5.6, and a record 3.7 ms instead of 4.6.
ALTER TABLE deliveries DROP CONSTRAINT deliveries_message_id_key;
CREATE UNIQUE INDEX sends_one_per_message_id_prefix ON sends (message_id_prefix);

-- 2. Room on every page for the claim's new version of each row. A claim changes no indexed
-- column, so PostgreSQL can make it a HOT update (no new index entries at all) when the new
-- version fits on the row's page; with full pages it never did (3% of updates were HOT).
-- A claim leases rows in id order, so it rewrites whole pages at once: at fillfactor 50,
-- 83% of claims were HOT and a claim took 2.5–3.4 ms instead of 5.2–6.5 (at 70, almost
-- none were; at 40, all were, but the fan-out was 18% slower). It applies to pages written
-- from now on. A record changes `status`, which the partial index deliveries_due names, so
-- it cannot be HOT whatever the room.
ALTER TABLE deliveries SET (fillfactor = 50);
