/** What the CLI needs to know about, and do to, the terminal it prints to. */

/** Columns of the terminal on stdout; undefined when stdout is a pipe or file, whose lines are never cut. */
export function terminalWidth(): number | undefined {
  return process.stdout.isTTY ? process.stdout.columns : undefined;
}

/** Rows of the terminal on stdout (24 when it does not say). */
export function terminalHeight(): number {
  return process.stdout.rows || 24;
}

const CURSOR_HOME = '\x1b[H';
const CLEAR_TO_LINE_END = '\x1b[K';
const CLEAR_TO_SCREEN_END = '\x1b[J';

/**
 * Replaces what is on the screen with `lines`: cursor home, each line
 * written over the old one, then the rest cleared. Overwriting rather than
 * clearing first keeps the picture from flickering.
 */
export function redraw(lines: string[]): void {
  process.stdout.write(`${CURSOR_HOME}${lines.map((line) => `${line}${CLEAR_TO_LINE_END}`).join('\n')}\n${CLEAR_TO_SCREEN_END}`);
}

/** Colours on a terminal, none when piped or redirected, or with NO_COLOR set (https://no-color.org) or TERM=dumb. */
export function useColour(stream: NodeJS.WriteStream = process.stdout): boolean {
  return stream.isTTY === true && !process.env.NO_COLOR && process.env.TERM !== 'dumb';
}

const SGR = { red: 31, green: 32, yellow: 33, blue: 34, magenta: 35, cyan: 36, grey: 90, bold: 1 } as const;
export type Colour = keyof typeof SGR;

/** Text in a colour (for a terminal: see useColour). */
export const paint = (text: string, colour: Colour): string => `\x1b[${SGR[colour]}m${text}\x1b[0m`;
