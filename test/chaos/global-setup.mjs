/** The main suite's cluster, and an empty folder for this run's chaos figures. */
import { rm } from 'node:fs/promises';
import { tsImport } from 'tsx/esm/api';
import base from '../global-setup.mjs';

export default async function globalSetup() {
  const { FIGURES_DIR } = await tsImport('./report.ts', import.meta.url);
  await rm(FIGURES_DIR, { recursive: true, force: true });
  await base();
}
