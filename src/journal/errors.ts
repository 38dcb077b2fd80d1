/** A journal that cannot be read or does not add up: the daemon stops and leaves every file as it is. */
export class JournalCorruptError extends Error {
  override readonly name = 'JournalCorruptError';

  /** `where` is a file, `file:line` or `file: task ...` */
  constructor(where: string, problem: string) {
    super(`${where}: ${problem}; the journal was left as it is`);
  }
}
