import { StringDecoder } from 'node:string_decoder';
import { isTerminal } from '../protocol/index.js';
import type { Task } from '../scheduler/index.js';
import { readChunks } from './answer.js';
import { OUTPUT_STREAMS, type OutputFiles, type OutputStream } from './output-files.js';

/** How often a follower looks at the files without a notice (a file system that gives none). */
const POLL_MS = 1000;

/** Where a follower stands in one attempt's output. */
interface Position {
  name: string;
  release: () => void;
  offsets: Record<OutputStream, number>;
  decoders: Record<OutputStream, StringDecoder>;
}

/**
 * Sends a task's output as it is written: what its current (or last)
 * attempt has written so far, then what it writes, until the task is
 * terminal and all of it is sent; a later attempt's output follows the
 * earlier one's. `send` resolves once the reader has taken the data (false:
 * the reader is gone), so a slow reader slows the reading of the files,
 * never the daemon's memory.
 */
export async function followOutput(
  task: Task,
  outputs: OutputFiles,
  gone: AbortSignal,
  send: (stream: OutputStream, data: string) => Promise<boolean>,
): Promise<void> {
  let at: Position | undefined;
  const sendText = async (stream: OutputStream, text: string) => text === '' || (await send(stream, text));
  /** Sends what the files hold past what was sent, up to `end(stream)`; false once the reader is gone. */
  const readOn = async (position: Position, end: (stream: OutputStream) => number) => {
    for (const stream of OUTPUT_STREAMS) {
      for await (const chunk of readChunks(outputs.path(position.name, stream), position.offsets[stream], end(stream))) {
        position.offsets[stream] += chunk.length;
        if (!(await sendText(stream, position.decoders[stream].write(chunk)))) return false;
      }
    }
    return true;
  };
  /** Sends what the decoders still hold (a character cut at the end), and lets go of the files. */
  const leave = async () => {
    if (!at) return true;
    const { decoders, release } = at;
    release();
    at = undefined;
    for (const stream of OUTPUT_STREAMS) if (!(await sendText(stream, decoders[stream].end()))) return false;
    return true;
  };
  try {
    while (!gone.aborted) {
      const change = nextChange(task, outputs, gone);
      try {
        // Read after the state: a task terminal before this read has nothing more to write.
        const terminal = isTerminal(task.state);
        const name = task.stored.output;
        if (at?.name !== name) {
          // The earlier attempt's files are final (and held): what was written after the last pass is sent first.
          if (at && !(await readOn(at, () => task.spec.max_output_bytes))) return;
          if (!(await leave())) return;
          if (name) at = { name, release: outputs.hold(name), offsets: { stdout: 0, stderr: 0 }, decoders: { stdout: new StringDecoder('utf8'), stderr: new StringDecoder('utf8') } };
        }
        if (at && !(await readOn(at, (stream) => task.stored[`${stream}_bytes`] ?? task.spec.max_output_bytes))) return;
        if (terminal) return void (await leave());
        await change.happened;
      } finally {
        change.stop();
      }
    }
  } finally {
    at?.release();
  }
}

/** Resolves when the task's files are written to, it ends, the reader goes, or a while has passed. */
function nextChange(task: Task, outputs: OutputFiles, gone: AbortSignal): { happened: Promise<void>; stop: () => void } {
  let stop: () => void = () => undefined;
  const happened = new Promise<void>((resolve) => {
    const unwatch = outputs.watch(task.id, () => resolve());
    const unsettle = task.onSettled(() => resolve());
    const timer = setTimeout(resolve, POLL_MS);
    const onGone = () => resolve();
    gone.addEventListener('abort', onGone, { once: true });
    stop = () => {
      unwatch();
      unsettle();
      clearTimeout(timer);
      gone.removeEventListener('abort', onGone);
    };
  });
  return { happened, stop };
}
