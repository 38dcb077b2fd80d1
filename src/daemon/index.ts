export { startDaemon, type RunningDaemon } from './daemon.js';
export { ConfigError, DEFAULT_CONFIG, type DaemonConfig } from './config.js';
