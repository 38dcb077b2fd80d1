export { ClusterScheduler, type ClusterOptions } from './cluster-scheduler.js';
export { Database, isUnreachable, storePatienceMs } from './database.js';
export { NodeNameTakenError } from './lease.js';
export { migrate, StoreVersionError } from './migrations.js';
