/**
 * Jest in ESM mode (fairsend is an ES module, as are nodemailer, smtp-server and mailparser).
 * Every test file gets its own database cloned from a migrated template (test/global-setup.ts);
 * the cluster is the embedded PostgreSQL unless DATABASE_URL names a server.
 * @type {import('jest').Config}
 */
export default {
  testEnvironment: 'node',
  extensionsToTreatAsEsm: ['.ts'],
  moduleNameMapper: { '^(\\.{1,2}/.*)\\.js$': '$1' },
  transform: { '^.+\\.ts$': ['ts-jest', { useESM: true }] },
  testMatch: ['<rootDir>/test/**/*.test.ts'],
  globalSetup: '<rootDir>/test/global-setup.mjs',
  globalTeardown: '<rootDir>/test/global-teardown.mjs',
  testTimeout: 60000,
  // Two cores: two workers keep the database and the SMTP servers responsive.
  maxWorkers: 2,
  // A worker's heap grows about 12 MB per test file (modules kept per file under
  // --experimental-vm-modules) and, near 800 MB, takes longer than jest's 500 ms to exit: "A
  // worker process has failed to exit gracefully". A worker past this after a file is replaced.
  workerIdleMemoryLimit: '512MB',
};
