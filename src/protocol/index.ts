export * from './defaults.js';
export * from './errors.js';
export * from './framing.js';
export * from './schema.js';
export * from './types.js';
