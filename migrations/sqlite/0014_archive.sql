-- The public archive (`archive = true` on an offering): a send marked private
-- (`sangha schedule --private`) is emailed as usual but never shown in the archive or its feed.
-- Conventions as in 0001: BIGINT 0/1 for a flag.
ALTER TABLE sends ADD COLUMN private BIGINT NOT NULL DEFAULT 0;
-- The archive's pages list an offering's sends newest first.
CREATE INDEX sends_by_offering_time ON sends (offering_id, send_at);
