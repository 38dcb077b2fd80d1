import { MemoryTaskStore } from '../src/scheduler/index.js';
import { describeStoreConformance } from './store-conformance.js';

const journal = { put: () => undefined, drop: () => undefined, putGroup: () => undefined, flushed: () => Promise.resolve() };

describeStoreConformance('MemoryTaskStore', () => new MemoryTaskStore(journal));
