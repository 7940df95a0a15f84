-- The controller as a service (`rollout serve` runs rollouts).

-- Who runs a rollout: `cli`, the `rollout apply` that started it (nothing
-- else touches it while it runs), or `serve`, the worker of whichever
-- `rollout serve` holds the lease below.
ALTER TABLE rollouts ADD COLUMN runner TEXT NOT NULL DEFAULT 'cli';

-- One row per lease: the serve process that runs the service's rollouts
-- until `expires_at` (epoch ms of the database's clock), renewed well before
-- that. Another process takes it only once it has expired.
CREATE TABLE IF NOT EXISTS controller_lease (
    name        TEXT PRIMARY KEY,
    holder      TEXT NOT NULL,
    acquired_at BIGINT NOT NULL,
    renewed_at  BIGINT NOT NULL,
    expires_at  BIGINT NOT NULL
);

-- The API's event stream reads the journal by time.
CREATE INDEX IF NOT EXISTS steps_at ON steps (at);
