-- Alerts recorded against a rollout, once per (rollout, fingerprint): the
-- first delivery (webhook or poll) wins and the engine rolls back on it. Keyed
-- by rollout, not globally, so the same alert firing again during a later
-- rollout is recorded again.

CREATE TABLE IF NOT EXISTS rollout_alerts (
    rollout_id   TEXT NOT NULL REFERENCES rollouts (id),
    fingerprint  TEXT NOT NULL,
    labels       TEXT NOT NULL,
    starts_at    TEXT NOT NULL,
    starts_at_ms BIGINT,
    source       TEXT NOT NULL,
    selector     TEXT NOT NULL,
    received_at  BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, fingerprint)
);

-- Replaced by rollout_alerts: its global fingerprint key would hide an alert
-- firing again during a later rollout.
DROP TABLE IF EXISTS alerts_seen;
