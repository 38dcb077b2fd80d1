export * from './defaults.js';
export * from './errors.js';
export * from './exit-codes.js';
export { isObject } from './fields.js';
export * from './framing.js';
export * from './schema.js';
export * from './token-file.js';
export * from './types.js';
