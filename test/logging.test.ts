/**
 * What the logs look like to a person and to a log shipper: readable text on a terminal and JSON
 * lines elsewhere (LOG_FORMAT forces either), routine requests at debug, no key written twice in
 * a line, and no error-level line for routine work such as changing a service's rate while it sends.
 */
import { loadConfig } from '../services/kernel/config.js';
import { ConfigError } from '../services/kernel/errors.js';
import { componentLogger, createLogger, isPretty } from '../services/kernel/logger.js';
import { createHttpServer, isRoutineRequest } from '../src/http/server.js';
import { createRepeatLevel } from '../src/progress-log.js';
import { startSmtpCatcher } from '../src/smtp-catcher.js';
import { createToken } from '../services/auth.js';
import { createTestEngine } from './helpers/db.js';
import { LogSink } from './helpers/http.js';
import { until, userWithContacts } from './helpers/scheduler.js';

/** A sink that says it is a terminal, as process.stdout does in one. */
class TtySink extends LogSink {
  readonly isTTY = true;
}

/**
 * Keys that occur more than once in one object of a JSON text. JSON.parse keeps the last of a
 * repeated key silently, so the raw text is scanned: strings are skipped, and each object gets its
 * own set of keys (nested objects may reuse a name).
 */
function duplicateKeys(json: string): string[] {
  const dups: string[] = [];
  const stack: { object: boolean; keys: Set<string>; expectKey: boolean }[] = [];
  for (let i = 0; i < json.length; i++) {
    const c = json[i]!;
    const top = stack[stack.length - 1];
    if (c === '"') {
      let j = i + 1;
      while (json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      if (top?.object && top.expectKey) {
        const key = JSON.parse(json.slice(i, j + 1)) as string;
        if (top.keys.has(key)) dups.push(key);
        top.keys.add(key);
        top.expectKey = false;
      }
      i = j;
    } else if (c === '{' || c === '[') stack.push({ object: c === '{', keys: new Set(), expectKey: c === '{' });
    else if (c === '}' || c === ']') stack.pop();
    else if (c === ',' && top?.object) top.expectKey = true;
  }
  return dups;
}

describe('duplicateKeys (the scanner the log tests rely on)', () => {
  it('finds a key repeated in one object, and only there', () => {
    expect(duplicateKeys('{"a":1,"component":"m","component":"m"}')).toEqual(['component']);
    expect(duplicateKeys('{"a":{"b":1},"c":{"b":2},"d":[{"b":1},{"b":2}],"e":"\\"a\\":1,\\"a\\""}')).toEqual([]);
    expect(duplicateKeys('{"x":[1,"x",{"x":1,"x":2}]}')).toEqual(['x']);
  });
});

describe('log format', () => {
  it('is readable text on a terminal and JSON elsewhere, unless LOG_FORMAT says which', () => {
    expect(isPretty('auto', new TtySink())).toBe(true);
    expect(isPretty('auto', new LogSink())).toBe(false);
    expect(isPretty('json', new TtySink())).toBe(false);
    expect(isPretty('pretty', new LogSink())).toBe(true);
    expect(loadConfig({}).logFormat).toBe('auto');
    expect(loadConfig({ LOG_FORMAT: 'pretty' }).logFormat).toBe('pretty');
    expect(() => loadConfig({ LOG_FORMAT: 'xml' })).toThrow(ConfigError);
    expect(() => loadConfig({ LOG_FORMAT: 'xml' })).toThrow(/LOG_FORMAT must be one of auto, pretty, json, got "xml"/);
  });

  it('pretty: one line per record with time, level name and message, fields as JSON, secrets redacted', () => {
    const sink = new LogSink();
    const log = createLogger('info', sink, 'pretty');
    log.info({ campaign: 7, transport: { auth: { user: 'u', pass: 'hunter2' } } }, 'progress');
    log.debug('not at info');
    const lines = sink.text.split('\n').filter(Boolean);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^\[\d\d:\d\d:\d\d\.\d{3}\] INFO: progress \{"campaign":7,"transport":\{"auth":"\[redacted\]"\}\}$/);
    expect(sink.text).not.toContain('hunter2');
    expect(sink.text).not.toContain('\x1b['); // forced pretty into a file: no colour codes
  });

  it('auto on a terminal: pretty with colours; auto into a pipe or file: JSON lines', () => {
    const tty = new TtySink();
    createLogger('info', tty, 'auto').warn('careful');
    expect(tty.text).toContain('\x1b[');
    expect(tty.text).toMatch(/WARN.*careful/);
    expect(() => JSON.parse(tty.text) as unknown).toThrow();
    const pipe = new LogSink();
    createLogger('info', pipe, 'auto').warn('careful');
    expect(pipe.lines()).toEqual([expect.objectContaining({ level: 40, msg: 'careful', app: 'fairsend' })]);
    const forced = new LogSink();
    createLogger('info', Object.assign(forced, { isTTY: true }), 'json').info('x');
    expect(forced.lines()).toEqual([expect.objectContaining({ level: 30, msg: 'x' })]);
  });

  it('binds a component once, however many layers ask for it', () => {
    const sink = new LogSink();
    const base = createLogger('info', sink);
    const once = componentLogger(componentLogger(base, 'maintenance'), 'maintenance');
    once.child({ job: 'analyze_tables' }).info('ran');
    componentLogger(once, 'http').info('other');
    const [first, second] = sink.text.split('\n');
    expect(duplicateKeys(first!)).toEqual([]);
    expect(JSON.parse(first!)).toMatchObject({ component: 'maintenance', job: 'analyze_tables' });
    // A different component is a child: pino writes both, the later one wins when parsed.
    expect(JSON.parse(second!)).toMatchObject({ component: 'http' });
  });

  it('classes successful reads as routine, and changes and failures not', () => {
    expect(isRoutineRequest('GET', 200)).toBe(true);
    expect(isRoutineRequest('HEAD', 304)).toBe(true);
    expect(isRoutineRequest('GET', 401)).toBe(false);
    expect(isRoutineRequest('GET', 503)).toBe(false);
    expect(isRoutineRequest('POST', 200)).toBe(false);
    expect(isRoutineRequest('DELETE', 204)).toBe(false);
  });
});

describe("npm start's progress lines", () => {
  it('are info when their figures move and debug while they repeat, per campaign and for the scheduler', () => {
    const levelOf = createRepeatLevel();
    expect(levelOf('campaign 1', ['sending', 4, 0, null])).toBe('info');
    expect(levelOf('campaign 2', ['sending', 4, 0, null])).toBe('info'); // another key
    expect(levelOf('campaign 1', ['sending', 4, 0, null])).toBe('debug');
    expect(levelOf('campaign 1', ['sending', 4, 0, null])).toBe('debug');
    expect(levelOf('campaign 1', ['sending', 5, 0, null])).toBe('info');
    expect(levelOf('scheduler', ['relay:running:5'])).toBe('info');
    expect(levelOf('scheduler', ['relay:running:5'])).toBe('debug');
    expect(levelOf('scheduler', ['relay:paused:5'])).toBe('info');
  });
});

describe('the logs of a running engine', () => {
  it('write each key once, routine requests at debug, and no error for a rate change while sending', async () => {
    const logs = new LogSink();
    const smtp = await startSmtpCatcher({ keep: false });
    const engine = await createTestEngine({ logger: createLogger('debug', logs), schedulerTickMs: 50 });
    // The server logs through the engine's logger, as `npm start` does.
    const server = await createHttpServer(engine, { processMetrics: false, queueCountCacheMs: 0 });
    try {
      const admin = await engine.users.create({ name: 'Admin', email: 'admin@example.test', quota: 1_000_000, role: 'admin' });
      const token = await createToken(engine, admin.id);
      const call = (method: 'GET' | 'POST', url: string, payload?: object) =>
        server.app.inject({ method, url, headers: { authorization: `Bearer ${token}` }, ...(payload ? { payload } : {}) });
      const created = await call('POST', '/api/services', {
        name: 'relay',
        transport: { host: '127.0.0.1', port: smtp.port },
        sending_rate: 0,
        daily_quota: 1000,
        max_connections: 2,
      });
      expect(created.statusCode).toBe(201);
      const serviceId = created.json<{ id: number }>().id;
      const u = await userWithContacts(engine, 'L', 40);
      await engine.campaigns.create({
        userId: u.userId,
        name: 'logged',
        from: 'l@example.test',
        templates: [u.templateId],
        contacts: u.contactIds,
      });

      await engine.scheduler.start();
      engine.jobs.start();
      await smtp.waitFor(5);
      // Rate changes while the service sends: slower, then unlimited again.
      await engine.services.update(serviceId, { sendingRate: 0.05 });
      for (const url of ['/health', '/metrics', '/api/scheduler/status', '/', '/api/campaigns']) {
        expect((await call('GET', url)).statusCode).toBe(200);
      }
      await engine.services.update(serviceId, { sendingRate: 0 });
      await engine.jobs.runNow('analyze_tables');
      await until(() => smtp.accepted >= 40, 60_000, 'all 40 messages delivered');
      await engine.scheduler.stop();
    } finally {
      await server.close();
      await engine.close();
      await smtp.stop();
    }

    const raw = logs.text.split('\n').filter(Boolean);
    const lines = logs.lines();
    expect(lines.length).toBeGreaterThan(10);
    // Each key once per object, in every line (the maintenance lines used to carry component twice).
    expect(raw.map((l) => ({ l, dups: duplicateKeys(l) })).filter((x) => x.dups.length)).toEqual([]);
    expect(lines.some((l) => l.component === 'maintenance' && l.job === 'analyze_tables')).toBe(true);
    // Nothing at error level or above: a rate change is routine.
    expect(lines.filter((l) => Number(l.level) >= 50)).toEqual([]);
    // Successful reads at debug; the POST that made the service at info, with its URL.
    const completed = lines.filter((l) => l.msg === 'request completed') as { level: number; req: { method: string; url: string } }[];
    const reads = completed.filter((l) => l.req.method === 'GET');
    expect(reads.map((l) => l.req.url).sort()).toEqual(['/', '/api/campaigns', '/api/scheduler/status', '/health', '/metrics']);
    expect(new Set(reads.map((l) => l.level))).toEqual(new Set([20]));
    expect(completed.filter((l) => l.req.method === 'POST').map((l) => [l.level, l.req.url])).toEqual([[30, '/api/services']]);
    expect(lines.filter((l) => l.msg === 'incoming request').every((l) => l.level === 20)).toBe(true);
  }, 120_000);
});
