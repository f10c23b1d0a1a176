import type { Engine } from '../src/engine.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { createTestEngine, rows } from './helpers/db.js';
import { until } from './helpers/scheduler.js';

/**
 * The server takes the message data, then hangs up before its reply: the sender cannot know
 * whether the message was accepted. at-least-once resends it with the same Message-ID;
 * at-most-once marks it unknown and never resends.
 */
describe.each(['at-least-once', 'at-most-once'] as const)('a connection dropped after DATA (%s)', (mode) => {
  let engine: Engine;
  let smtp: SmtpCatcher;
  const raws: string[] = [];
  beforeEach(async () => {
    let drops = 0;
    smtp = await startSmtpCatcher({
      dropAfterData: (m) => {
        raws.push(m.raw.toString());
        return m.to[0] === 'maybe@example.test' && drops++ === 0;
      },
    });
    engine = await createTestEngine({ deliveryMode: mode, retryDelayMs: 200, schedulerTickMs: 50 });
  });
  afterEach(async () => {
    await engine.close();
    await smtp.stop();
    raws.length = 0;
  });

  it(mode === 'at-least-once' ? 'resends it with the same Message-ID' : 'marks it unknown and never resends it', async () => {
    const user = await engine.users.create({ name: 'A', email: 'a@example.test', quota: 10 });
    const { ids } = await engine.contacts.bulkCreate(user.id, [{ email: 'maybe@example.test' }, { email: 'fine@example.test' }]);
    const tpl = await engine.templates.create(user.id, { name: 't', subject: 's', text: 'x' });
    const c = await engine.campaigns.create({ userId: user.id, name: 'c', from: 'a@example.test', templates: [tpl.id], contacts: ids });
    await engine.services.create({
      name: 's',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0,
      dailyQuota: 100,
      maxConnections: 1,
    });
    await engine.scheduler.start();
    await until(async () => (await engine.campaigns.progress(c.id)).status === 'completed', 15000, 'completion');
    const maybe = raws.filter((r) => /^To: maybe@example\.test\r$/m.test(r));
    const messageIds = maybe.map((r) => /^Message-ID: (.*)\r$/m.exec(r)![1]);
    const [row] = await rows<{ status: string; attempts: number }>(
      engine.apiDb,
      'SELECT status, attempts FROM subtasks WHERE task_id = $t AND contact_id = $c',
      {
        t: c.id,
        c: ids[0],
      },
    );
    if (mode === 'at-least-once') {
      expect(maybe).toHaveLength(2); // the dropped one, and the resend
      expect(messageIds[1]).toBe(messageIds[0]); // a duplicate is always detectable
      expect(row).toEqual({ status: 'sent', attempts: 2 });
      expect(await engine.campaigns.progress(c.id)).toMatchObject({ sent: 2, unknown: 0 });
    } else {
      expect(maybe).toHaveLength(1); // never sent twice
      expect(row).toEqual({ status: 'unknown', attempts: 1 });
      expect(await engine.campaigns.progress(c.id)).toMatchObject({ sent: 1, unknown: 1 });
    }
    // The unit of an ambiguous send stays used: the message may have been accepted.
    // (Reserved but unused units go back when the service falls idle, on its next tick.)
    const expected = mode === 'at-least-once' ? 3 : 2;
    await until(async () => (await engine.services.quota())[0]!.usedQuota === expected, 5000, `used quota ${expected}`);
  });
});
