/**
 * One cluster per run: the embedded PostgreSQL (a fresh one in a temporary folder) when no
 * DATABASE_URL is set, the given server otherwise. One template database, migrated once; each
 * test file clones it (CREATE DATABASE ... TEMPLATE), which takes milliseconds.
 *
 * Plain ESM loading the TypeScript sources through tsx: jest transpiles global setup outside its
 * module mapper, where NodeNext's `.js` specifiers would not resolve.
 */
import { tsImport } from 'tsx/esm/api';

export default async function globalSetup() {
  const { setUpTestCluster } = await tsImport('./helpers/test-cluster.ts', import.meta.url);
  globalThis.__fairsendCluster = await setUpTestCluster();
}
