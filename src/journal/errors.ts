/** A journal that cannot be read or does not add up: the daemon stops and leaves every file as it is. */
export class JournalCorruptError extends Error {
  override readonly name = 'JournalCorruptError';

  /** `where` is a file, `file:line` or `file: task ...` */
  constructor(where: string, problem: string) {
    super(`${where}: ${problem}; the journal was left as it is`);
  }
}

/** A file system error while opening the data dir (disk full, read-only, no permission...), naming the dir. */
export class DataDirError extends Error {
  override readonly name = 'DataDirError';
  /** the errno code of the cause (ENOSPC, EROFS, ...), kept for whoever maps errors to exit codes */
  readonly code: string | undefined;

  constructor(dir: string, cause: NodeJS.ErrnoException) {
    super(`data dir ${dir}: ${cause.message}`, { cause });
    this.code = cause.code;
  }
}
