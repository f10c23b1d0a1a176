/**
 * The reliability and security suite (`npm run test:chaos`): the same ESM setup and per-file
 * databases as the main suite, only the chaos files, one worker (kill points, database restarts
 * and the long run each need the machine's two cores), and a summary table printed at the end.
 * @type {import('jest').Config}
 */
import base from './jest.config.js';

export default {
  ...base,
  testMatch: ['<rootDir>/test/chaos/**/*.chaos.ts'],
  globalSetup: '<rootDir>/test/chaos/global-setup.mjs',
  globalTeardown: '<rootDir>/test/chaos/global-teardown.mjs',
  testTimeout: 300000,
  maxWorkers: 1,
  // In band, as with one worker before: jest uses workers whenever a memory limit is set, and the
  // chaos files' one worker then outlived jest's 500 ms exit ("failed to exit gracefully").
  workerIdleMemoryLimit: undefined,
};
