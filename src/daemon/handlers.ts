import type { ResponsePayloads, TaskRecord, ValidRequest } from '../protocol/index.js';
import type { Task } from '../scheduler/index.js';
import { RecordList } from './answer.js';
import { unlessStopping, type DaemonContext } from './context.js';
import { VERSION } from './version.js';

type Payload<O extends ValidRequest['op']> = ResponsePayloads[O];
type RequestOf<O extends ValidRequest['op']> = Extract<ValidRequest, { op: O }>;

/** The ops that need nothing of the connection they arrive on. */
export type StatelessOp = Exclude<ValidRequest['op'], 'subscribe' | 'auth' | 'follow'>;

/** The record with its output, read from the files as the answer is written. */
const withOutput = (task: Task, ctx: DaemonContext): TaskRecord => task.record(ctx.outputs.textOf(task));

const withDuplicate = (task: TaskRecord, duplicate: boolean) => (duplicate ? { task, duplicate: true as const } : { task });

/** Each op's handler; `gone` aborts when the asking connection closes. */
export const handlers: {
  [O in StatelessOp]: (request: RequestOf<O>, ctx: DaemonContext, gone: AbortSignal) => Payload<O> | Promise<Payload<O>>;
} = {
  submit: ({ spec, id }, ctx) => {
    const { task, duplicate } = ctx.scheduler.submit(spec, id);
    return withDuplicate(withOutput(task, ctx), duplicate);
  },

  run: async ({ spec, id }, ctx, gone) => {
    const { task, duplicate } = ctx.scheduler.submit(spec, id);
    await unlessStopping(ctx, ctx.scheduler.wait(task, undefined, gone));
    return withDuplicate(withOutput(task, ctx), duplicate);
  },

  status: ({ id }, ctx) => ({ task: withOutput(ctx.scheduler.get(id), ctx) }),

  wait: async ({ id, timeout_ms }, ctx, gone) => {
    const { task, waitedOut } = await unlessStopping(ctx, ctx.scheduler.wait(ctx.scheduler.get(id), timeout_ms, gone));
    const record = withOutput(task, ctx);
    return waitedOut ? { task: record, waited_out: true } : { task: record };
  },

  list: (filter, ctx) => {
    const { tasks, total } = ctx.scheduler.list(filter);
    return { tasks: new RecordList(tasks.map((task) => task.record())) as unknown as TaskRecord[], total };
  },

  cancel: async ({ id }, ctx) => {
    const task: Task = await ctx.scheduler.cancel(ctx.scheduler.get(id));
    return { task: withOutput(task, ctx) };
  },

  count: (_request, ctx) => ctx.scheduler.countByState(),

  health: (_request, ctx) => ({ version: VERSION, uptime_ms: Date.now() - ctx.startedAt }),

  stats: async (_request, ctx) => ({
    cpu: ctx.sampler.cpu(),
    memory: ctx.sampler.memory(),
    disk: await ctx.sampler.disk(ctx.config.dataDir),
    counts: ctx.scheduler.countByState().counts,
    concurrency: ctx.scheduler.concurrency,
    uptime_ms: Date.now() - ctx.startedAt,
  }),
};
