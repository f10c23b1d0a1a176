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
};
