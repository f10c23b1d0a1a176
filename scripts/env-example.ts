/**
 * Prints `.env.example` (default) or the README's configuration table (`--markdown`) from the one
 * table of variables in services/kernel/config.ts, so neither drifts from the code:
 *   npx tsx scripts/env-example.ts > .env.example
 *   npx tsx scripts/env-example.ts --markdown
 */
import { VARIABLES } from '../services/kernel/config.js';

const specs = Object.values(VARIABLES);
const defaultOf = (spec: (typeof specs)[number]) => ('default' in spec ? spec.default : undefined);
const lines: string[] = [];
if (process.argv.includes('--markdown')) {
  lines.push('| variable | default | meaning |', '| --- | --- | --- |');
  for (const spec of specs)
    lines.push(`| \`${spec.env}\` | ${defaultOf(spec) !== undefined ? `\`${defaultOf(spec)}\`` : '(unset)'} | ${spec.doc} |`);
} else {
  lines.push('# fairsend configuration. Every variable is optional; the value shown is the default.', '');
  for (const spec of specs) {
    const d = defaultOf(spec);
    lines.push(`# ${spec.doc}`, `${d === undefined ? '# ' : ''}${spec.env}=${d ?? ''}`, '');
  }
}
process.stdout.write(lines.join('\n') + '\n');
