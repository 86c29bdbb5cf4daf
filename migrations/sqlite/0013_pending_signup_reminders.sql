-- Signups nobody confirmed (issue 19): one reminder each, and forgetting them later.
--
-- A row here records that the scheduler decided about the reminder of one signup (its
-- consent record): its primary key makes a second reminder of that signup impossible, however
-- many schedulers run. delivery_id is the reminder's delivery (a delivery of kind
-- 'confirmation', so the per-domain cap counts it); NULL when none was sent (the address is on
-- the suppression list). sent_at is when it was queued: the reminder's link works for
-- tokens.confirm_ttl_hours from then. The row goes with the signup and the person, by cascade.
CREATE TABLE signup_reminders (
    consent_id    BIGINT PRIMARY KEY REFERENCES consents (id) ON DELETE CASCADE,
    subscriber_id BIGINT NOT NULL REFERENCES subscribers (id) ON DELETE CASCADE,
    delivery_id   BIGINT REFERENCES deliveries (id) ON DELETE CASCADE,
    sent_at       BIGINT NOT NULL
);
CREATE UNIQUE INDEX signup_reminders_by_delivery ON signup_reminders (delivery_id);
CREATE INDEX signup_reminders_by_subscriber ON signup_reminders (subscriber_id);

-- The scheduler looks for signups of a given age (to remind, to forget) through this index;
-- only signups are in it, so it costs little beside the consents table's own writes.
CREATE INDEX consents_signups_by_time ON consents (at) WHERE action = 'signup';
