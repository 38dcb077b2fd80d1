import type { Database } from './database.js';

/**
 * The schema, one step per version: a step is never changed once released,
 * a change is a new step. Every daemon runs the steps it finds missing at
 * its start, one daemon at a time (an advisory lock), each in a transaction.
 */
const MIGRATIONS: readonly string[] = [
  `
  CREATE TABLE tm_nodes (
    name text PRIMARY KEY,
    instance uuid NOT NULL,
    address text NOT NULL,
    concurrency integer NOT NULL,
    running integer NOT NULL DEFAULT 0,
    started_at timestamptz NOT NULL DEFAULT now(),
    last_seen timestamptz NOT NULL DEFAULT now(),
    lease_until timestamptz NOT NULL
  );
  -- Each claim of a task gets a number: the result of an attempt is written only under the claim that started it.
  CREATE SEQUENCE tm_claims;
  CREATE TABLE tm_tasks (
    id text PRIMARY KEY,
    seq bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    state text NOT NULL,
    priority integer NOT NULL,
    grp text NOT NULL,
    ready_at bigint,
    depends_on text[] NOT NULL,
    node text,
    claim bigint,
    cancel_requested boolean NOT NULL DEFAULT false,
    finished_at timestamptz,
    record jsonb NOT NULL
  );
  CREATE INDEX tm_tasks_queued ON tm_tasks (priority DESC, seq) WHERE state = 'QUEUED';
  CREATE INDEX tm_tasks_pending ON tm_tasks (ready_at) WHERE state = 'PENDING';
  CREATE INDEX tm_tasks_running ON tm_tasks (node) WHERE state = 'RUNNING';
  CREATE INDEX tm_tasks_state_seq ON tm_tasks (state, seq);
  CREATE INDEX tm_tasks_grp_seq ON tm_tasks (grp, seq);
  CREATE INDEX tm_tasks_depends_on ON tm_tasks USING gin (depends_on);
  CREATE INDEX tm_tasks_finished ON tm_tasks (finished_at) WHERE finished_at IS NOT NULL;
  CREATE TABLE tm_groups (
    name text PRIMARY KEY,
    concurrency integer,
    paused boolean NOT NULL DEFAULT false
  );
  CREATE TABLE tm_output (
    task_id text NOT NULL REFERENCES tm_tasks (id) ON DELETE CASCADE,
    claim bigint NOT NULL,
    stream smallint NOT NULL,
    pos bigint NOT NULL,
    data bytea NOT NULL,
    PRIMARY KEY (task_id, claim, stream, pos)
  );
  -- Every daemon hears of every change when it commits: waiters, subscribers and idle daemons wake up.
  CREATE FUNCTION tm_task_changed() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    IF TG_OP = 'DELETE' THEN
      PERFORM pg_notify('tm_change', 'REMOVED ' || OLD.id);
      RETURN OLD;
    END IF;
    PERFORM pg_notify('tm_change', NEW.state || ' ' || NEW.id);
    RETURN NEW;
  END $$;
  CREATE TRIGGER tm_task_changed AFTER INSERT OR UPDATE OR DELETE ON tm_tasks FOR EACH ROW EXECUTE FUNCTION tm_task_changed();
  CREATE FUNCTION tm_output_written() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    PERFORM pg_notify('tm_output', NEW.task_id);
    RETURN NEW;
  END $$;
  CREATE TRIGGER tm_output_written AFTER INSERT ON tm_output FOR EACH ROW EXECUTE FUNCTION tm_output_written();
  CREATE FUNCTION tm_group_changed() RETURNS trigger LANGUAGE plpgsql AS $$
  BEGIN
    PERFORM pg_notify('tm_groups', NEW.name);
    RETURN NEW;
  END $$;
  CREATE TRIGGER tm_group_changed AFTER INSERT OR UPDATE ON tm_groups FOR EACH ROW EXECUTE FUNCTION tm_group_changed();
  `,
  // Groups are listed in the order they were made, which an update must not change.
  `ALTER TABLE tm_groups ADD COLUMN made bigint GENERATED ALWAYS AS IDENTITY`,
  // Where a daemon runs: one restarted on the same host after a crash takes its name back at once.
  `ALTER TABLE tm_nodes ADD COLUMN host text, ADD COLUMN pid integer`,
];

/** Any number, the same in every daemon: whoever holds this lock migrates. */
const MIGRATION_LOCK = 0x746d_6967;

export class StoreVersionError extends Error {
  override readonly name = 'StoreVersionError';
}

/** Brings the store's tables to this version's schema; a store of a newer version is refused. */
export async function migrate(db: Database): Promise<void> {
  await db.transaction(async (query) => {
    // Held to the end of the transaction: a second daemon starting at once waits, then finds nothing to do.
    await query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
    await query('CREATE TABLE IF NOT EXISTS tm_migrations (version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())');
    const applied = new Set((await query<{ version: number }>('SELECT version FROM tm_migrations')).map((row) => row.version));
    const newest = Math.max(0, ...applied);
    if (newest > MIGRATIONS.length) {
      throw new StoreVersionError(`the store's schema is version ${newest}, newer than this daemon's (${MIGRATIONS.length}): upgrade the daemon`);
    }
    for (const [index, step] of MIGRATIONS.entries()) {
      if (applied.has(index + 1)) continue;
      await query(step);
      await query('INSERT INTO tm_migrations (version) VALUES ($1)', [index + 1]);
    }
  });
}
