export { Journal, type Durability, type JournalOptions } from './journal.js';
export { DataDirError, JournalCorruptError } from './errors.js';
export { DataDirLockedError } from './lock.js';
