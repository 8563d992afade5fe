-- The service's tables; run at every start, so every statement is idempotent.
-- "{schema}" is replaced by FASTAGENTIC_DB_SCHEMA (validated as an identifier).
CREATE SCHEMA IF NOT EXISTS "{schema}";

CREATE TABLE IF NOT EXISTS "{schema}".agent_tasks (
    task_id         text PRIMARY KEY,
    user_id         text NOT NULL,
    idempotency_key text,
    prompt          text NOT NULL,
    status          text NOT NULL DEFAULT 'pending'
                    CHECK (status IN ('pending', 'running', 'done', 'failed')),
    result          text,
    error           text,
    attempts        integer NOT NULL DEFAULT 0,
    worker          text,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);

CREATE UNIQUE INDEX IF NOT EXISTS agent_tasks_idempotency
    ON "{schema}".agent_tasks (user_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Postgres is the record of truth for accepted tasks: what the reconciler needs
-- to queue one again (max_tokens), where it was queued (message_id), and the
-- last sign of life (touched_at: queued, started, a running attempt's heartbeat,
-- seen waiting in the stream).
ALTER TABLE "{schema}".agent_tasks ADD COLUMN IF NOT EXISTS max_tokens integer;
ALTER TABLE "{schema}".agent_tasks ADD COLUMN IF NOT EXISTS message_id text;
ALTER TABLE "{schema}".agent_tasks
    ADD COLUMN IF NOT EXISTS touched_at timestamptz NOT NULL DEFAULT now();

CREATE INDEX IF NOT EXISTS agent_tasks_open
    ON "{schema}".agent_tasks (touched_at)
    WHERE status IN ('pending', 'running');
