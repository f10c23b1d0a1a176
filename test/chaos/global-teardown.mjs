/** Stops the cluster, then prints the summary table of every figure the chaos tests recorded. */
import { tsImport } from 'tsx/esm/api';
import base from '../global-teardown.mjs';

export default async function globalTeardown() {
  await base();
  const { printSummary } = await tsImport('./report.ts', import.meta.url);
  await printSummary();
}
