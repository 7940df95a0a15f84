-- Portable between SQLite and PostgreSQL: TEXT ids and JSON, BIGINT epoch
-- milliseconds, BIGINT 0/1 flags.

CREATE TABLE IF NOT EXISTS rollouts (
    id         TEXT PRIMARY KEY,
    component  TEXT NOT NULL,
    version    TEXT NOT NULL,
    spec       TEXT NOT NULL,
    plan       TEXT NOT NULL,
    state      TEXT NOT NULL,
    active     BIGINT NOT NULL,
    created_at BIGINT NOT NULL,
    updated_at BIGINT NOT NULL
);

-- One active rollout per component, whichever controller asks.
CREATE UNIQUE INDEX IF NOT EXISTS rollouts_one_active_per_component
    ON rollouts (component) WHERE active = 1;

CREATE INDEX IF NOT EXISTS rollouts_created_at ON rollouts (created_at);

-- The journal: every transition, appended before it is acted on.
CREATE TABLE IF NOT EXISTS steps (
    rollout_id TEXT NOT NULL REFERENCES rollouts (id),
    seq        BIGINT NOT NULL,
    kind       TEXT NOT NULL,
    host       TEXT,
    detail     TEXT NOT NULL,
    at         BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, seq)
);

-- Batches that finished; a resumed controller never re-applies them.
CREATE TABLE IF NOT EXISTS batches_done (
    rollout_id  TEXT NOT NULL REFERENCES rollouts (id),
    stage       BIGINT NOT NULL,
    batch       BIGINT NOT NULL,
    finished_at BIGINT NOT NULL,
    PRIMARY KEY (rollout_id, stage, batch)
);

-- What each host should run: the source of the Salt pillar.
CREATE TABLE IF NOT EXISTS assignments (
    host       TEXT NOT NULL,
    component  TEXT NOT NULL,
    version    TEXT NOT NULL,
    source     TEXT NOT NULL,
    sha256     TEXT NOT NULL,
    updated_at BIGINT NOT NULL,
    PRIMARY KEY (host, component)
);

-- Alertmanager alerts already acted on, by fingerprint.
CREATE TABLE IF NOT EXISTS alerts_seen (
    fingerprint TEXT PRIMARY KEY,
    rollout_id  TEXT,
    seen_at     BIGINT NOT NULL
);
