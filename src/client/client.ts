import { EventEmitter } from 'node:events';
import { connect, type Socket } from 'node:net';
import { DEFAULT_HOST, DEFAULT_PORT, LineFramer } from '../protocol/index.js';
import type {
  Counts,
  GroupInfo,
  Op,
  OutputEvent,
  Ref,
  RequestErrorCode,
  RequestFields,
  ResponsePayloads,
  ServerMessage,
  Stats,
  SuccessResponse,
  TaskRecord,
  TaskSpecInput,
} from '../protocol/index.js';

export interface ClientOptions {
  host?: string;
  port?: number;
  /** sent as `auth` right after connecting, for a daemon started with --token-file */
  token?: string | undefined;
  /** how long connecting may take */
  connectTimeoutMs?: number;
}

/** A request the daemon answered with `ok: false`. */
export class TaskManagerError extends Error {
  override readonly name = 'TaskManagerError';
  constructor(
    readonly code: RequestErrorCode,
    /** the daemon's own message, without the code */
    readonly reason: string,
  ) {
    super(`${code}: ${reason}`);
  }
}

/** The connection failed or closed before the answer came. */
export class ConnectionError extends Error {
  override readonly name = 'ConnectionError';
}

type Pending = { resolve: (response: SuccessResponse) => void; reject: (error: Error) => void };
type OutputListener = (stream: OutputEvent['stream'], data: string) => void;

export interface ClientEvents {
  task: [TaskRecord];
  dropped: [number];
  close: [];
}

/**
 * The typed client of the task-manager daemon: one method per op, matched to
 * its answer by `ref`, so any number of requests may be in flight at once.
 */
export class TaskManagerClient extends EventEmitter<ClientEvents> {
  private readonly pending = new Map<Ref, Pending>();
  /** `follow` requests in flight, by ref */
  private readonly followers = new Map<Ref, OutputListener>();
  private nextRef = 1;
  private closedError: Error | undefined;
  private subscribed = false;

  private constructor(private readonly socket: Socket) {
    super();
    socket.setNoDelay(true);
    // The protocol's own framer, not the ndjson package: its split2 parsing re-scans a long line
    // at every chunk, 27 ms per answer carrying 1 MiB of output against 3 ms (docs/performance.md).
    const framer = new LineFramer(Number.MAX_SAFE_INTEGER);
    socket.on('data', (chunk: Buffer) => {
      for (const frame of framer.push(chunk)) {
        if (frame.kind !== 'line') continue;
        let message: ServerMessage;
        try {
          message = JSON.parse(frame.line.toString('utf8')) as ServerMessage;
        } catch (error) {
          socket.destroy(new Error(`the daemon sent a line that is not JSON: ${(error as Error).message}`));
          return;
        }
        this.receive(message);
      }
    });
    socket.on('error', (error) => (this.closedError ??= new ConnectionError(`connection to the daemon failed: ${error.message}`)));
    socket.on('close', () => {
      const error = this.closedError ?? new ConnectionError('the daemon closed the connection');
      this.closedError = error;
      for (const { reject } of this.pending.values()) reject(error);
      this.pending.clear();
      this.emit('close');
    });
  }

  static async connect(options: ClientOptions = {}): Promise<TaskManagerClient> {
    const host = options.host ?? DEFAULT_HOST;
    const port = options.port ?? DEFAULT_PORT;
    const socket = await new Promise<Socket>((resolve, reject) => {
      const socket = connect({ host, port });
      const timer = setTimeout(() => socket.destroy(new Error('timed out')), options.connectTimeoutMs ?? 5000);
      socket.once('connect', () => {
        clearTimeout(timer);
        socket.removeAllListeners('error');
        resolve(socket);
      });
      socket.once('error', (error) => {
        clearTimeout(timer);
        reject(new ConnectionError(`cannot connect to the daemon at ${host}:${port}: ${error.message}`));
      });
    });
    const client = new TaskManagerClient(socket);
    if (options.token !== undefined) await client.auth(options.token);
    return client;
  }

  /** Sends any request and resolves with its successful response; `onOutput` takes the output events of a `follow`. */
  request<O extends Op>(op: O, fields: RequestFields<O>, onOutput?: OutputListener): Promise<SuccessResponse<O>> {
    if (this.closedError) return Promise.reject(this.closedError);
    const ref = `c${this.nextRef++}`;
    if (onOutput) this.followers.set(ref, onOutput);
    return new Promise<SuccessResponse<O>>((resolve, reject) => {
      const answer = (response: SuccessResponse) => {
        if (answers(op, response)) return resolve(response);
        // A daemon that mixes up its answers cannot be trusted with the requests still in flight either.
        const error = new ConnectionError(`the daemon answered a request of op "${op}" as one of op "${response.op}"`);
        reject(error);
        this.socket.destroy(error);
      };
      this.pending.set(ref, { resolve: answer, reject });
      this.socket.write(`${JSON.stringify({ ...fields, op, ref })}\n`);
    }).finally(() => this.followers.delete(ref));
  }

  /** Runs a task and resolves when it has finished (completed, failed or canceled). */
  async run(spec: TaskSpecInput): Promise<ResponsePayloads['run']> {
    return strip(await this.request('run', spec));
  }

  /** Queues a task and resolves at once with its record. */
  async submit(spec: TaskSpecInput): Promise<ResponsePayloads['submit']> {
    return strip(await this.request('submit', spec));
  }

  async status(id: string): Promise<TaskRecord> {
    return (await this.request('status', { id })).task;
  }

  /** Waits for a task to finish; with `timeoutMs`, `waited_out` says it had not. */
  async wait(id: string, timeoutMs?: number): Promise<ResponsePayloads['wait']> {
    return strip(await this.request('wait', timeoutMs === undefined ? { id } : { id, timeout_ms: timeoutMs }));
  }

  async list(filter: RequestFields<'list'> = {}): Promise<ResponsePayloads['list']> {
    return strip(await this.request('list', filter));
  }

  async cancel(id: string): Promise<TaskRecord> {
    return (await this.request('cancel', { id })).task;
  }

  /**
   * Calls `onOutput` with a task's output as it is written (what was written
   * so far first), and resolves with its record (without output) once it is
   * terminal.
   */
  async follow(id: string, onOutput: OutputListener): Promise<TaskRecord> {
    return (await this.request('follow', { id }, onOutput)).task;
  }

  /** Cancels the task if it has not finished, then forgets it; resolves with its last record. */
  async remove(id: string): Promise<TaskRecord> {
    return (await this.request('remove', { id })).task;
  }

  /** Runs a finished task again under its id (and the tasks canceled because it failed). */
  async restart(id: string): Promise<TaskRecord> {
    return (await this.request('restart', { id })).task;
  }

  /** Changes a task that has not started: its command, priority, start time or group. */
  async edit(id: string, changes: Omit<RequestFields<'edit'>, 'id'>): Promise<TaskRecord> {
    return (await this.request('edit', { ...changes, id })).task;
  }

  /** Starts nothing new in `group`, or in every group when none is named; running tasks go on. */
  async pause(group?: string): Promise<GroupInfo[]> {
    return groupList(await this.request('pause', group === undefined ? {} : { group }));
  }

  /** Lets tasks start again in `group`, or in every group when none is named. */
  async resume(group?: string): Promise<GroupInfo[]> {
    return groupList(await this.request('resume', group === undefined ? {} : { group }));
  }

  async groups(): Promise<GroupInfo[]> {
    return (await this.request('groups', {})).groups;
  }

  /** Makes a group, or changes how many of its tasks may run at once. */
  async setGroup(name: string, concurrency: number): Promise<GroupInfo> {
    return (await this.request('set_group', { name, concurrency })).group;
  }

  async count(): Promise<{ counts: Counts; tasks: number }> {
    return strip(await this.request('count', {}));
  }

  async health(): Promise<ResponsePayloads['health']> {
    return strip(await this.request('health', {}));
  }

  async stats(): Promise<Stats> {
    return strip(await this.request('stats', {}));
  }

  /** Starts the stream of state changes, delivered as `task` events (and `dropped` when the daemon had to skip some). */
  async subscribe(ids?: string[]): Promise<void> {
    await this.request('subscribe', ids === undefined ? {} : { ids });
    this.subscribed = true;
  }

  async auth(token: string): Promise<void> {
    await this.request('auth', { token });
  }

  /** Drops the connection at once; requests in flight fail with ConnectionError. */
  destroy(): void {
    this.socket.destroy();
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.socket.destroyed) return resolve();
      this.socket.once('close', () => resolve());
      // The daemon keeps a subscribed connection open after a half-close (the stream lasts until
      // the client disconnects), so a subscriber disconnects outright.
      if (this.subscribed) this.socket.destroy();
      else this.socket.end();
    });
  }

  private receive(message: ServerMessage): void {
    if ('event' in message) {
      if (message.event === 'task') this.emit('task', message.task);
      else if (message.event === 'output') this.followers.get(message.ref!)?.(message.stream, message.data);
      else this.emit('dropped', message.count);
      return;
    }
    const waiting = message.ref === undefined ? undefined : this.pending.get(message.ref);
    if (!waiting) return; // an error about a line the daemon could not read: never ours
    this.pending.delete(message.ref!);
    if (message.ok) waiting.resolve(message);
    else waiting.reject(new TaskManagerError(message.error.code, message.error.message));
  }
}

/** Whether a response is one to a request of `op`. */
const answers = <O extends Op>(op: O, response: SuccessResponse): response is SuccessResponse<O> => response.op === op;

/** The groups of a `pause` or `resume` answer: the one named, or all. */
const groupList = (answer: { group: GroupInfo } | { groups: GroupInfo[] }): GroupInfo[] => ('group' in answer ? [answer.group] : answer.groups);

/** Drops the envelope fields of a response, leaving its payload. */
function strip<R extends SuccessResponse>({ ok: _ok, ref: _ref, op: _op, ...payload }: R): Omit<R, 'ok' | 'ref' | 'op'> {
  return payload;
}
