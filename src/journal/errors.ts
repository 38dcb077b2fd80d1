/** A journal file that cannot be read: the daemon stops and leaves the file as it is. */
export class JournalCorruptError extends Error {
  override readonly name = 'JournalCorruptError';
}
