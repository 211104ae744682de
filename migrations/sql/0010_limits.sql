-- Limits and operations: query-cost buckets (rate limiting), persisted queries, job runs.

-- One bucket of query-cost points per API client (or member), shared by every gateway replica,
-- charged by one UPSERT per request (src/alliance/ratelimit.py: a plain statement rather than a
-- function, so that its plan stays cached per connection).
-- UNLOGGED: every GraphQL request writes its bucket, and an unlogged write produces no WAL (no
-- WAL volume, no flush at commit). What is lost is only what a rate limiter may lose: after a
-- crash PostgreSQL empties the table, so every client starts again with a full bucket, and a
-- standby has no copy, so a failover does the same. One row per client or member, ~100 bytes.
-- fillfactor 50 leaves room on each page for HOT updates of these constantly rewritten rows.
CREATE UNLOGGED TABLE rate_limit_buckets (
  bucket text PRIMARY KEY CHECK (length(bucket) BETWEEN 1 AND 200),
  available numeric NOT NULL,
  updated_at timestamptz NOT NULL,
  granted boolean NOT NULL
) WITH (fillfactor = 50);

-- Persisted queries (Apollo's automatic persisted queries): the text of a query by its SHA-256,
-- shared by every replica. Bounded: registering beyond p_limit removes the oldest registrations
-- (a client whose hash was removed is told PERSISTED_QUERY_NOT_FOUND and sends the text again).
CREATE TABLE persisted_queries (
  sha256 text PRIMARY KEY CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  query text NOT NULL CHECK (length(query) BETWEEN 1 AND 100000),
  created_at timestamptz NOT NULL DEFAULT clock_timestamp()
);
CREATE INDEX persisted_queries_age ON persisted_queries (created_at);

CREATE FUNCTION persisted_query_register(p_sha256 text, p_query text, p_limit int) RETURNS void
LANGUAGE sql VOLATILE SECURITY DEFINER SET search_path = public AS $$
  WITH added AS (
    INSERT INTO persisted_queries (sha256, query) VALUES (p_sha256, p_query)
    ON CONFLICT (sha256) DO NOTHING
    RETURNING 1
  )
  DELETE FROM persisted_queries
  WHERE EXISTS (SELECT 1 FROM added)
    AND sha256 IN (SELECT sha256 FROM persisted_queries ORDER BY created_at DESC, sha256 OFFSET greatest(p_limit - 1, 0))
$$;

-- Runs of the scheduled jobs (the `alliance` CLI in a CronJob's pod): a row when a run starts,
-- finished with its outcome and counts. /metrics reads the latest runs from here, so a job's
-- duration and last success survive the pod that ran it.
CREATE TABLE job_runs (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  job text NOT NULL CHECK (job ~ '^[a-z][a-z_]{0,62}$'),
  started_at timestamptz NOT NULL DEFAULT clock_timestamp(),
  finished_at timestamptz,
  outcome text NOT NULL DEFAULT 'running' CHECK (outcome IN ('running', 'succeeded', 'failed')),
  counts jsonb NOT NULL DEFAULT '{}' CHECK (jsonb_typeof(counts) = 'object'),
  CHECK ((outcome = 'running') = (finished_at IS NULL)),
  CHECK (finished_at >= started_at)
);
CREATE INDEX job_runs_latest ON job_runs (job, started_at DESC);
