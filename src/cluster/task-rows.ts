import { groupOf, type TaskState } from '../protocol/index.js';
import { Task, type StoredTask } from '../scheduler/index.js';
import type { Query } from './database.js';

/** The columns a task is read with. */
export const TASK_COLUMNS = 'id, seq, state, ready_at, node, claim, cancel_requested, record';

/** A row of tm_tasks as it is read: bigints come as text. */
export interface TaskRow {
  id: string;
  seq: string;
  state: TaskState;
  ready_at: string | null;
  node: string | null;
  claim: string | null;
  cancel_requested: boolean;
  record: Omit<StoredTask, 'id' | 'seq' | 'state' | 'ready_at' | 'node'>;
}

/**
 * The task a row holds. Its columns are the truth for what SQL decides on
 * (state, readiness, who runs it); the record holds the rest.
 */
export function taskOf(row: TaskRow): Task {
  const stored: StoredTask = { ...row.record, id: row.id, seq: Number(row.seq), state: row.state };
  if (row.ready_at !== null) stored.ready_at = Number(row.ready_at);
  if (row.node !== null) stored.node = row.node;
  const task = new Task(stored);
  task.cancelRequested = row.cancel_requested;
  task.executorLosses = stored.executor_losses ?? 0;
  return task;
}

/** The record column of a task: what no column holds. */
function recordOf(stored: StoredTask): TaskRow['record'] {
  const { id: _id, seq: _seq, state: _state, ready_at: _readyAt, node: _node, ...record } = stored;
  return record;
}

/**
 * Adds a new task unless `maxUnfinished` tasks are not finished yet, in one
 * statement; 'exists' when a task has its id. Its seq is set from the store's.
 */
export async function insertTask(query: Query, task: Task, maxUnfinished: number): Promise<'inserted' | 'exists' | 'full'> {
  const s = task.stored;
  const rows = await query<{ seq: string }>(
    `INSERT INTO tm_tasks (id, state, priority, grp, ready_at, depends_on, finished_at, record)
     SELECT $1::text, $2::text, $3::integer, $4::text, $5::bigint, $6::text[], $7::timestamptz, $8::jsonb
     WHERE (SELECT count(*) FROM tm_tasks WHERE state IN ('PENDING', 'QUEUED', 'RUNNING')) < $9
     ON CONFLICT (id) DO NOTHING RETURNING seq`,
    [s.id, s.state, s.priority, groupOf(s.spec), s.ready_at ?? null, s.spec.depends_on, s.finished_at ?? null, recordOf(s), maxUnfinished],
  );
  if (rows[0]) {
    s.seq = Number(rows[0].seq);
    task.seq = s.seq;
    return 'inserted';
  }
  return (await query('SELECT 1 FROM tm_tasks WHERE id = $1', [s.id])).length > 0 ? 'exists' : 'full';
}

/** Writes a task back whole; `claim` is the attempt that runs it (null: none does). */
export async function saveTask(query: Query, task: Task, claim: string | null): Promise<void> {
  const s = task.stored;
  await query(
    `UPDATE tm_tasks SET state = $2, priority = $3, grp = $4, ready_at = $5, node = $6, claim = $7,
       cancel_requested = false, finished_at = $8, record = $9 WHERE id = $1`,
    [s.id, s.state, s.priority, groupOf(s.spec), s.ready_at ?? null, s.node ?? null, claim, s.finished_at ?? null, recordOf(s)],
  );
}

/** The task with this id, locked until the transaction ends; undefined if there is none. */
export async function lockTask(query: Query, id: string): Promise<Task | undefined> {
  const [row] = await query<TaskRow>(`SELECT ${TASK_COLUMNS} FROM tm_tasks WHERE id = $1 FOR NO KEY UPDATE`, [id]);
  return row && taskOf(row);
}

/**
 * Marks tasks RUNNING on `node` under their claims, in one statement; the
 * output of earlier attempts (of the tasks named in `ranBefore`) is no longer theirs.
 */
export async function claimTasks(query: Query, node: string, claimed: { task: Task; claim: string }[], ranBefore: string[]): Promise<void> {
  const ids = claimed.map(({ task }) => task.id);
  await query(
    `UPDATE tm_tasks t SET state = 'RUNNING', node = $1, claim = c.claim, cancel_requested = false, record = c.record
     FROM unnest($2::text[], $3::bigint[], $4::jsonb[]) AS c (id, claim, record) WHERE t.id = c.id`,
    [node, ids, claimed.map(({ claim }) => claim), claimed.map(({ task }) => JSON.stringify(recordOf(task.stored)))],
  );
  if (ranBefore.length > 0) await query('DELETE FROM tm_output WHERE task_id = ANY ($1)', [ranBefore]);
}
