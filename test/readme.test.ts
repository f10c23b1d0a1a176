/**
 * The README is a landing page: what fairsend is, the two commands, one short example, links to the
 * guides in docs/. This keeps it one (short, with those parts), and keeps every relative link in
 * the README and the guides pointing at a file that exists.
 */
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { packageRoot } from '../src/paths.js';

const readme = readFileSync(join(packageRoot, 'README.md'), 'utf8');
const docsDir = join(packageRoot, 'docs');
const guides = readdirSync(docsDir).filter((f) => f.endsWith('.md'));

/** Relative link targets of a markdown text (no scheme, no pure anchor), without their #anchor. */
function relativeLinks(markdown: string): string[] {
  const targets = [...markdown.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!);
  return targets.filter((t) => !/^[a-z]+:/i.test(t) && !t.startsWith('#')).map((t) => t.split('#')[0]!);
}

describe('README', () => {
  it('is a landing page: what fairsend is, the two commands, one example, the guides', () => {
    expect(readme.split('\n').length).toBeLessThan(165);
    expect(readme).toMatch(/^# fairsend\n\n.*email campaign delivery engine/i);
    expect(readme).toContain('npm install && npm start');
    expect(readme).toMatch(/^npm test\b/m);
    expect(readme).toMatch(/```ts\nimport \{ createEngine \} from 'fairsend';/);
    const linked = new Set(relativeLinks(readme).filter((l) => l.startsWith('docs/')));
    for (const guide of [
      'programmatic-api.md',
      'delivery.md',
      'http-api.md',
      'cli.md',
      'configuration.md',
      'operations.md',
      'performance.md',
      'reliability.md',
      'architecture.md',
    ]) {
      expect(guides).toContain(guide);
      expect(linked).toContain(`docs/${guide}`);
    }
  });

  it('links only to files that exist, and so does every guide', () => {
    const broken: string[] = [];
    for (const file of ['README.md', ...guides.map((g) => join('docs', g))]) {
      const text = readFileSync(join(packageRoot, file), 'utf8');
      for (const target of relativeLinks(text)) {
        if (!existsSync(resolve(dirname(join(packageRoot, file)), target))) broken.push(`${file} -> ${target}`);
      }
    }
    expect(broken).toEqual([]);
  });
});
