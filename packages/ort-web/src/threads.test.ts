import { availableParallelism } from 'node:os';
import { describe, expect, it } from 'vitest';
import { defaultThreads } from './index.js';

describe('default wasm thread count', () => {
  it('is the cores Node reports (os.availableParallelism)', () => {
    expect(defaultThreads()).toBe(availableParallelism());
  });
});
