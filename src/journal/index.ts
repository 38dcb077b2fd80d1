export { Journal, type Durability, type JournalOptions } from './journal.js';
export { JournalCorruptError } from './replay.js';
export { DataDirLockedError } from './lock.js';
