/** Text layout for the terminal: durations, sizes, key/value blocks and tables. */

/** `0.8ms`, `12ms`, `3.4s`, `2m05s`, `1h02m`: short, and precise where it matters. */
export function formatDuration(ms: number): string {
  if (ms < 10) return `${Number(ms.toFixed(1))}ms`;
  if (ms < 1000) return `${Math.round(ms)}ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)}s`;
  const totalSeconds = Math.floor(ms / 1000);
  const seconds = totalSeconds % 60;
  const totalMinutes = Math.floor(totalSeconds / 60);
  if (totalMinutes < 60) return `${totalMinutes}m${String(seconds).padStart(2, '0')}s`;
  return `${Math.floor(totalMinutes / 60)}h${String(totalMinutes % 60).padStart(2, '0')}m`;
}

const BYTE_UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** `512 B`, `1.5 KiB`, `3.8 GiB`. */
export function formatBytes(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < BYTE_UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${value} B` : `${value.toFixed(1)} ${BYTE_UNITS[unit]}`;
}

/** `HH:MM:SS.mmm` in local time, for lines of a log. */
export function formatClock(date: Date): string {
  const pad = (n: number, width = 2) => String(n).padStart(width, '0');
  return `${pad(date.getHours())}:${pad(date.getMinutes())}:${pad(date.getSeconds())}.${pad(date.getMilliseconds(), 3)}`;
}

/** Cuts text to `width` characters, marking the cut with `…`. */
export function truncate(text: string, width: number): string {
  if (text.length <= width) return text;
  return width <= 1 ? text.slice(0, Math.max(width, 0)) : `${text.slice(0, width - 1)}…`;
}

/** Aligned `key  value` lines; pairs without a value are left out. */
export function formatKeyValues(pairs: [string, string | undefined][]): string {
  const shown = pairs.filter((pair): pair is [string, string] => pair[1] !== undefined);
  const keyWidth = Math.max(0, ...shown.map(([key]) => key.length));
  return shown.map(([key, value]) => `${key.padEnd(keyWidth)}  ${value}`).join('\n');
}

/**
 * Columns padded to their widest cell. Only the last column may be long (a
 * command line): it is cut so that each line fits `maxWidth` when given.
 * `paint` colours a cell once padded (so colour codes never count as width);
 * `row` is -1 for the header.
 */
export function formatTable(
  header: string[],
  rows: string[][],
  maxWidth?: number,
  paint: (cell: string, row: number, column: number) => string = (cell) => cell,
): string[] {
  const all = [header, ...rows];
  const last = header.length - 1;
  const widths = header.map((_, column) => Math.max(...all.map((row) => (row[column] ?? '').length)));
  const fixedWidth = widths.slice(0, last).reduce((sum, width) => sum + width + 2, 0);
  // the last column keeps a few characters even on a narrow terminal
  const lastWidth = maxWidth === undefined ? Infinity : Math.max(maxWidth - fixedWidth, 8);
  return all.map((row, r) =>
    row
      .map((cell, column) => paint(column === last ? truncate(cell, lastWidth) : cell.padEnd(widths[column]!), r - 1, column))
      .join('  ')
      .trimEnd(),
  );
}

/** `1 task`, `2 tasks`. */
export const plural = (count: number, noun: string): string => `${count} ${noun}${count === 1 ? '' : 's'}`;
