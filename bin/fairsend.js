#!/usr/bin/env node
// The `fairsend` command: runs the compiled CLI (npm run build first) and exits with its code.
import { runCli } from '../dist/src/cli/index.js';

process.exitCode = await runCli(process.argv);
