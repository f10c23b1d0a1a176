import type { Sequelize } from 'sequelize';
import type { Engine } from '../../src/engine.js';
import type { SentEvent } from '../../services/scheduler/loop.js';

/** Collects the scheduler's 'sent' events in order. */
export function recordSends(engine: Engine): SentEvent[] {
  const sent: SentEvent[] = [];
  engine.scheduler.on('sent', (e) => sent.push(e));
  return sent;
}

/** Resolves when `predicate` holds, checking after every scheduler event; rejects after `ms`. */
export async function until(predicate: () => boolean | Promise<boolean>, ms = 20000, what = 'condition'): Promise<void> {
  const started = Date.now();
  while (!(await predicate())) {
    if (Date.now() - started > ms) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Resolves once a session of this database waits on a lock (one the test holds), as `until` does. */
export function untilLockWaiter(db: Sequelize, what: string, ms = 10_000): Promise<void> {
  return until(
    async () => {
      const [[r]] = (await db.query(
        "SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()",
      )) as [{ n: number }[], unknown];
      return r!.n > 0;
    },
    ms,
    what,
  );
}

/** A user with `n` contacts tagged `tag`, and a template; returns their ids. */
export async function userWithContacts(engine: Engine, name: string, n: number, opts: { quota?: number; tag?: string } = {}) {
  const user = await engine.users.create({ name, email: `${name.toLowerCase()}@example.test`, quota: opts.quota ?? 1_000_000 });
  const tag = opts.tag ?? 'list';
  const contacts = await engine.contacts.bulkCreate(
    user.id,
    Array.from({ length: n }, (_, i) => ({ email: `${name.toLowerCase()}${i + 1}@example.test`, name: `${name} ${i + 1}`, tags: [tag] })),
  );
  const template = await engine.templates.create(user.id, { name: 't', subject: `From ${name} to {{name}}`, text: 'Hello {{name}}' });
  return { userId: user.id, contactIds: contacts.ids, templateId: template.id };
}
