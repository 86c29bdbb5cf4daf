-- Why a delivery failed before any of it reached the relay: 'connect' (no connection, no or a
-- refusing greeting, no answer in time), 'tls' (STARTTLS, the handshake, the certificate or
-- its pin) or 'auth' (the relay refused the credentials). NULL for every other failure: a
-- reply to the message itself. `sangha sends retry ID` puts back the deliveries that failed
-- for one of these reasons, once the relay or the configuration is fixed; `sends show` names
-- them. Existing rows stay NULL: their text says what happened, and `sends retry --failed`
-- puts back every failed delivery whatever the reason.
ALTER TABLE deliveries ADD COLUMN failure_kind TEXT
    CHECK (failure_kind IN ('connect', 'tls', 'auth'));
