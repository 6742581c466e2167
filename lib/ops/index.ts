/** The differentiable ops, one namespace. */
export * from './elementwise.js';
export * from './linalg.js';
export * from './reduce.js';
export * from './nn.js';
export * from './shape.js';
