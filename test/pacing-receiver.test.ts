/**
 * The pacing rule through a real SMTP server on loopback, with 1, 5 and 20 connections and across a
 * restart of the engine: at most k + 1 messages of a service in any window of k intervals
 * (services/scheduler/pacer.ts), asserted at the dispatch for every window of one interval or
 * more, and at the server for every window of one second or more (see judgeReceiver). With the
 * server in a process of its own, at 20/s: test/pacing-sink.test.ts; across a takeover by a second
 * process, at the dispatch and at the server: test/scale-out.test.ts.
 */
import type { Engine } from '../src/engine.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { paceViolations, preciseNow } from '../services/scheduler/pacer.js';
import { createTestDatabase, createTestEngine } from './helpers/db.js';
import { recordSends, until, userWithContacts } from './helpers/scheduler.js';

// Two a second: the receiving server runs in the test's own process, which shares two busy cores
// with the engine and PostgreSQL (measured on a loaded machine: 2 to 300 ms from dispatch to
// acceptance). The dispatch side is checked strictly (every window of one interval or more).
const RATE = 0.5;
const T = RATE * 1000;

describe('the pacing rule at the receiving server', () => {
  let smtp: SmtpCatcher;
  let accepted: number[];
  beforeEach(async () => {
    accepted = [];
    smtp = await startSmtpCatcher({ keep: false, onAccept: () => accepted.push(preciseNow()) });
  });
  afterEach(() => smtp.stop());

  const engineFor = (url: string, connections: number) =>
    createTestEngine({ databaseUrl: url, schedulerTickMs: 50, concurrencyInitial: connections });

  async function setUp(connections: number, recipients: number): Promise<{ url: string; engine: Engine }> {
    const url = await createTestDatabase();
    const engine = await engineFor(url, connections);
    const u = await userWithContacts(engine, 'P', recipients);
    await engine.campaigns.create({
      userId: u.userId,
      name: 'p',
      from: 'p@example.test',
      templates: [u.templateId],
      recipientRule: { type: 'all' },
    });
    await engine.services.create({
      name: 'paced',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: RATE,
      dailyQuota: 100_000,
      maxConnections: connections,
    });
    return { url, engine };
  }

  /**
   * The receiver side: on this two-core machine shared by eight engineers (load 11 to 21 while
   * these tests were written) the first message of a new connection was accepted up to a second
   * late, and the in-process server, held up by the engine's event loop, saw bunches of 2 to 8
   * over k + 1 at 2 to 50 msg/s before the pacer kept each send behind the server's answers.
   * The server notes the instant before it answers, so the rule holds here too, whatever the delays.
   */
  function judgeReceiver(what: string): void {
    const v = paceViolations(accepted, T);
    console.log(`[pacing] ${what} at the receiver: ${v ? `${v.excess} over k + 1 in ${v.k} intervals from #${v.from}` : 'rule held'}`);
    expect([what, v]).toEqual([what, null]);
  }

  for (const connections of [1, 5, 20]) {
    it(`holds with ${connections} connection(s)`, async () => {
      const { engine } = await setUp(connections, 12);
      const sent = recordSends(engine);
      try {
        await engine.scheduler.start();
        await until(() => accepted.length === 12, 30_000, '12 messages');
        judgeReceiver(`${connections} connections`);
        expect(
          paceViolations(
            sent.map((e) => e.dispatchedAt),
            T,
            0,
          ),
        ).toBeNull();
        // The rate is bench W3's to measure (no timed assertions here); printed for the reader.
        const sorted = [...accepted].sort((a, b) => a - b);
        const rate = (sorted.length - 1) / ((sorted.at(-1)! - sorted[0]!) / 1000);
        console.log(`[pacing] ${connections} connections: ${rate.toFixed(2)} msg/s at the receiver for 2 configured`);
      } finally {
        await engine.close();
      }
    }, 60_000);
  }

  it('holds right after a restart of the engine', async () => {
    const { url, engine } = await setUp(5, 14);
    const first = recordSends(engine);
    await engine.scheduler.start();
    await until(() => accepted.length >= 6, 30_000, '6 messages');
    await engine.close();
    const again = await engineFor(url, 5);
    const next = recordSends(again);
    try {
      await again.scheduler.start();
      await until(() => accepted.length === 14, 30_000, 'the rest after the restart');
      judgeReceiver('restart');
      // At the dispatch, across the restart: one schedule, every window of one interval or more.
      expect(
        paceViolations(
          [...first, ...next].map((e) => e.dispatchedAt),
          T,
          0,
        ),
      ).toBeNull();
    } finally {
      await again.close();
    }
  }, 60_000);
});
