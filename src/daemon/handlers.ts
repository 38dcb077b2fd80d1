import { isTerminal, type GroupInfo, type Op, type ResponsePayloads, type TaskRecord, type ValidRequest } from '../protocol/index.js';
import type { Task } from '../scheduler/index.js';
import { type Deferred, RecordList } from './answer.js';
import { type DaemonContext, unlessStopping } from './context.js';
import { VERSION } from './version.js';

/** The ops that need nothing of the connection they arrive on. */
export type StatelessOp = Exclude<Op, 'subscribe' | 'auth' | 'follow'>;

/** The payload of op O's answer, as the connection writes it: output and long lists are read while it is written. */
export type Payload<O extends Op> = Deferred<ResponsePayloads[O]>;

/** The record with its output, read from the files as the answer is written. */
function withOutput(task: Task, ctx: DaemonContext) {
  const output = ctx.outputs.textOf(task);
  // record() puts the output at its place in the record; the type says what stands there.
  return task.record(output) as Omit<TaskRecord, 'stdout' | 'stderr'> & typeof output;
}

/**
 * Calls `use` at once on a value that is there (the embedded store answers
 * from memory: the record keeps the state the request left, before a start
 * queued meanwhile can run), or once a promise of it resolves.
 */
function when<T, R>(value: T | Promise<T>, use: (value: T) => R | Promise<R>): R | Promise<R> {
  return value instanceof Promise ? value.then(use) : use(value);
}

const withDuplicate = <T>(task: T, duplicate: boolean) => (duplicate ? { task, duplicate: true as const } : { task });

/** `pause` and `resume` answer with the one group named, or with every group. */
const groupsAnswer = (groups: GroupInfo[], named: string | undefined) => (named === undefined ? { groups } : { group: groups[0]! });

type Handler<O extends StatelessOp> = (request: ValidRequest<O>, ctx: DaemonContext, gone: AbortSignal) => Payload<O> | Promise<Payload<O>>;

/** Each op's handler; `gone` aborts when the asking connection closes. */
export const handlers: { [O in StatelessOp]: Handler<O> } = {
  submit: ({ spec, id }, ctx) => when(ctx.scheduler.submit(spec, id), ({ task, duplicate }) => withDuplicate(withOutput(task, ctx), duplicate)),

  run: async ({ spec, id }, ctx, gone) => {
    const { task, duplicate } = await ctx.inOrder(() => ctx.scheduler.submit(spec, id));
    const { task: ended } = await unlessStopping(ctx, ctx.scheduler.wait(task, undefined, gone));
    return withDuplicate(withOutput(ended, ctx), duplicate);
  },

  status: ({ id }, ctx) => when(ctx.scheduler.get(id), (task) => ({ task: withOutput(task, ctx) })),

  wait: async ({ id, timeout_ms }, ctx, gone) => {
    const { task, waitedOut } = await unlessStopping(ctx, ctx.scheduler.wait(await ctx.inOrder(() => ctx.scheduler.get(id)), timeout_ms, gone));
    const record = withOutput(task, ctx);
    return waitedOut ? { task: record, waited_out: true } : { task: record };
  },

  list: (filter, ctx) => when(ctx.scheduler.list(filter), ({ tasks, total }) => ({ tasks: new RecordList(tasks.map((task) => task.record())), total })),

  cancel: async ({ id }, ctx) => {
    const task: Task = await ctx.scheduler.cancel(await ctx.inOrder(() => ctx.scheduler.get(id)));
    return { task: withOutput(task, ctx) };
  },

  remove: ({ id }, ctx) => {
    // The record, with output read from files held until the answer is written, then the task is forgotten:
    // a finished one at its turn among the requests (a later one may use its id again); an unfinished one once
    // it has been canceled, which later requests do not wait for.
    const forget = (task: Task) => {
      const record = withOutput(task, ctx);
      return when(ctx.scheduler.remove(task), () => {
        ctx.subscribers.removed({ id: task.id, created_at: record.created_at });
        return { task: record };
      });
    };
    const atItsTurn = ctx.inOrder(() =>
      when(ctx.scheduler.get(id), (task) => (isTerminal(task.state) ? when(forget(task), (removed) => ({ removed })) : { running: task })),
    );
    return when(atItsTurn, (turn) => {
      if ('removed' in turn) return turn.removed;
      return ctx.scheduler.cancel(turn.running).then(forget, async (error: unknown) => {
        // It finished meanwhile: it is removed all the same.
        const now = await ctx.scheduler.get(id);
        if (!isTerminal(now.state)) throw error;
        return forget(now);
      });
    });
  },

  restart: ({ id }, ctx) => when(ctx.scheduler.get(id), (task) => when(ctx.scheduler.restart(task), (restarted) => ({ task: withOutput(restarted, ctx) }))),

  edit: (edit, ctx) => when(ctx.scheduler.get(edit.id), (task) => when(ctx.scheduler.edit(task, edit), (edited) => ({ task: withOutput(edited, ctx) }))),

  pause: ({ group }, ctx) => when(ctx.scheduler.setPaused(true, group), (groups) => groupsAnswer(groups, group)),

  resume: ({ group }, ctx) => when(ctx.scheduler.setPaused(false, group), (groups) => groupsAnswer(groups, group)),

  groups: (_request, ctx) => when(ctx.scheduler.groups(), (groups) => ({ groups })),

  set_group: ({ name, concurrency }, ctx) => when(ctx.scheduler.setGroup(name, concurrency), (group) => ({ group })),

  count: (_request, ctx) => ctx.scheduler.countByState(),

  health: (_request, ctx) => ({ version: VERSION, uptime_ms: Date.now() - ctx.startedAt }),

  stats: async (_request, ctx) => ({
    cpu: ctx.sampler.cpu(),
    memory: ctx.sampler.memory(),
    disk: await ctx.sampler.disk(ctx.config.dataDir),
    counts: (await ctx.scheduler.countByState()).counts,
    concurrency: ctx.scheduler.concurrency,
    gpu: await ctx.gpus.gpus(),
    uptime_ms: Date.now() - ctx.startedAt,
    ...(ctx.scheduler.nodes ? { nodes: await ctx.scheduler.nodes() } : {}),
  }),
};

/**
 * The ops carried out whole in the order their requests came. The others
 * take their turn for their first step only: a run's submit, a wait's or a
 * cancel's read, a remove of a finished task; what they wait for goes on
 * beside later requests.
 */
const IN_ORDER = new Set<StatelessOp>(['submit', 'status', 'list', 'count', 'restart', 'edit', 'pause', 'resume', 'groups', 'set_group']);

/** Runs the handler of the request's op: a request of op O gets a payload of op O. */
export function handle<O extends StatelessOp>(request: ValidRequest<O>, ctx: DaemonContext, gone: AbortSignal): Promise<Payload<O>> {
  const handler: Handler<O> = handlers[request.op];
  const run = () => handler(request, ctx, gone);
  return Promise.resolve(IN_ORDER.has(request.op) ? ctx.inOrder(run) : run());
}
