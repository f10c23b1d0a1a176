import { ConfigError } from '../services/kernel/errors.js';
import { loadConfig, VARIABLES } from '../services/kernel/config.js';

function errorOf(env: NodeJS.ProcessEnv): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error('expected a ConfigError');
}

describe('config', () => {
  it('applies the documented defaults when nothing is set', () => {
    const c = loadConfig({});
    expect(c.databaseUrl).toBeUndefined();
    expect([c.apiPoolMax, c.apiPoolMin, c.apiPoolAcquireMs, c.apiPoolIdleMs, c.apiPoolEvictMs]).toEqual([20, 2, 60000, 30000, 60000]);
    expect([c.schedulerPoolMax, c.schedulerPoolMin]).toEqual([5, 1]);
    expect(c.embeddedPgDir).toBe('./.fairsend/pg');
    expect(c.demoData).toBe(true);
  });

  it('reads and converts values', () => {
    const c = loadConfig({
      SCHEDULER_POOL_MAX: '8',
      DEMO_DATA: 'false',
      DATABASE_URL: 'postgres://u:p@h:5432/d',
      DEFAULT_TIMEZONE: 'Europe/Paris',
    });
    expect(c.schedulerPoolMax).toBe(8);
    expect(c.demoData).toBe(false);
    expect(c.databaseUrl).toBe('postgres://u:p@h:5432/d');
    expect(c.defaultTimezone).toBe('Europe/Paris');
  });

  it('names the variable and the bad value', () => {
    expect(errorOf({ SCHEDULER_POOL_MAX: '-3' }).message).toBe('SCHEDULER_POOL_MAX must be a positive integer, got "-3"');
    expect(errorOf({ API_POOL_MIN: 'two' }).message).toBe('API_POOL_MIN must be a non-negative integer, got "two"');
    expect(errorOf({ EMBEDDED_PG_PORT: '70000' }).message).toBe('EMBEDDED_PG_PORT must be a port number from 0 to 65535, got "70000"');
    expect(errorOf({ DEMO_DATA: 'maybe' }).message).toBe('DEMO_DATA must be true or false, got "maybe"');
    expect(errorOf({ DATABASE_URL: 'mysql://x' }).message).toBe('DATABASE_URL must be a postgres:// or postgresql:// URL, got "mysql://x"');
    expect(errorOf({ DEFAULT_TIMEZONE: 'Mars/Olympus' }).message).toBe(
      'DEFAULT_TIMEZONE must be an IANA time zone such as Europe/Paris, got "Mars/Olympus"',
    );
    expect(errorOf({ LOG_LEVEL: 'loud' }).message).toMatch(/^LOG_LEVEL must be one of fatal, error, .*got "loud"$/);
  });

  it('reports every bad variable at once, with a stable code', () => {
    const err = errorOf({ API_POOL_MAX: '0', SCHEDULER_POOL_MIN: '9' });
    expect(err.code).toBe('CONFIG_INVALID');
    expect(err.issues.map((i) => i.path)).toEqual(['API_POOL_MAX', 'SCHEDULER_POOL_MIN']);
    expect(err.issues[1]!.message).toBe('SCHEDULER_POOL_MIN must not exceed SCHEDULER_POOL_MAX (5), got "9"');
  });

  it('lets createEngine options override the environment', () => {
    expect(loadConfig({ SCHEDULER_POOL_MAX: '3' }, { schedulerPoolMax: 7 }).schedulerPoolMax).toBe(7);
  });

  it('documents every variable in .env.example', async () => {
    const { readFile } = await import('node:fs/promises');
    const example = await readFile(new URL('../.env.example', import.meta.url), 'utf8');
    for (const spec of Object.values(VARIABLES)) expect(example).toContain(`${spec.env}=`);
    // Exactly as scripts/env-example.ts makes it from VARIABLES: regenerate after any change.
    const { envExample } = await import('../scripts/config-docs.js');
    expect(example).toBe(envExample());
  });

  it('keeps the table of docs/configuration.md in step with VARIABLES (npx tsx scripts/env-example.ts --markdown)', async () => {
    const { readFile } = await import('node:fs/promises');
    const { configRows } = await import('../scripts/config-docs.js');
    const doc = await readFile(new URL('../docs/configuration.md', import.meta.url), 'utf8');
    // The cells of the table's body rows, whatever column widths prettier gave them.
    const lines = doc.split('\n');
    const head = lines.findIndex((l) => /^\|\s*variable\s*\|\s*default\s*\|\s*meaning\s*\|$/.test(l));
    expect(head).toBeGreaterThan(-1);
    const body: string[][] = [];
    for (let i = head + 2; i < lines.length && lines[i]!.startsWith('|'); i++) {
      body.push(
        lines[i]!.slice(1, -1)
          .split(' | ')
          .map((c) => c.trim()),
      );
    }
    expect(body).toEqual(configRows());
    expect(body.length).toBe(Object.keys(VARIABLES).length);
  });
});
