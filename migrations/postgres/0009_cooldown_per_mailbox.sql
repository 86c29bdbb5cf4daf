-- One confirmation email per inbox per cooldown, however the address is spelled.
--
-- The cooldown was kept per subscriber row (subscribers.confirmation_sent_at), and each
-- spelling of one inbox (`bOmB@`, `bomb@`, `bomb+1@`) is a row of its own, so each got its own
-- email. It is now kept per mailbox: a keyed hash (HMAC with the token key) of the local part
-- lowercased and without its +tag, at the ASCII domain (src/domain/email.rs). A row is claimed
-- with an upsert that only succeeds when the cooldown is over, so two signups racing for one
-- inbox cannot both queue an email. Rows past their cooldown are deleted as signups come.
-- subscribers.confirmation_sent_at is no longer written.
CREATE TABLE confirmation_cooldowns (
    mailbox_key TEXT   PRIMARY KEY,
    sent_at     BIGINT NOT NULL
);
CREATE INDEX confirmation_cooldowns_by_time ON confirmation_cooldowns (sent_at);
