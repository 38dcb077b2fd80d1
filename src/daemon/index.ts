export { ConfigError, type DaemonConfig, DEFAULT_CONFIG } from './config.js';
export { type RunningDaemon, startDaemon } from './daemon.js';
