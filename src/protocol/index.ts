export * from './errors.js';
export * from './framing.js';
export * from './types.js';
export * from './validate.js';
