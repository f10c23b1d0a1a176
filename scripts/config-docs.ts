/**
 * `.env.example` and the configuration table of docs/configuration.md, both made from the one table
 * of variables in services/kernel/config.ts. scripts/env-example.ts prints them; test/config.test.ts
 * fails when either file no longer matches (a variable added, renamed or reworded without regenerating).
 */
import { VARIABLES } from '../services/kernel/config.js';

type Spec = (typeof VARIABLES)[keyof typeof VARIABLES];

const specs: Spec[] = Object.values(VARIABLES);
const defaultOf = (spec: Spec): string | undefined => ('default' in spec ? spec.default : undefined);

/** One row per variable, in the table's order: name, default as shown, meaning. */
export function configRows(): [variable: string, shownDefault: string, meaning: string][] {
  return specs.map((spec) => {
    const d = defaultOf(spec);
    return [`\`${spec.env}\``, d !== undefined ? `\`${d}\`` : '(unset)', spec.doc];
  });
}

/** The markdown table (prettier aligns its columns in the docs; the cells are what count). */
export function configMarkdown(): string {
  const lines = ['| variable | default | meaning |', '| --- | --- | --- |', ...configRows().map((r) => `| ${r.join(' | ')} |`)];
  return lines.join('\n') + '\n';
}

/** The whole `.env.example`. */
export function envExample(): string {
  const lines = ['# fairsend configuration. Every variable is optional; the value shown is the default.', ''];
  for (const spec of specs) {
    const d = defaultOf(spec);
    lines.push(`# ${spec.doc}`, `${d === undefined ? '# ' : ''}${spec.env}=${d ?? ''}`, '');
  }
  return lines.join('\n') + '\n';
}
