import { tsImport } from 'tsx/esm/api';

export default async function globalTeardown() {
  const { tearDownTestCluster } = await tsImport('./helpers/test-cluster.ts', import.meta.url);
  await tearDownTestCluster(globalThis.__fairsendCluster);
}
