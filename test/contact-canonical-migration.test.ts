/**
 * The canonical-address migration (issue 17): rows written under the old form (variants of one
 * mailbox as distinct contacts) are rewritten and merged, the most restrictive status wins, and
 * history (status events, bounce events, subtasks, campaign recipient lists) follows the kept row.
 */
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { migrationsDir } from '../src/paths.js';
import { migrateUp } from '../src/migrator.js';
import { createEmptyDatabase, plainSequelize, rows } from './helpers/db.js';

const MIGRATION = '20261130908001-canonical-contacts.cjs';
const require = createRequire(import.meta.url);
const { repair } = require(`${migrationsDir}/${MIGRATION}`) as { repair: (s: string) => string | null };

describe('the canonical-address migration: repair()', () => {
  it.each([
    ['bob@bücher.de', 'bob@xn--bcher-kva.de'],
    ['bob@BÜCHER.de', 'bob@xn--bcher-kva.de'],
    ['bob@ex\u00adample.com', 'bob@example.com'],
    ['bob@example.com\u200b', 'bob@example.com'],
    ['bob@example.com.', 'bob@example.com'],
    ['  Bob@Example.COM ', 'Bob@example.com'],
    ['re\u0301my@example.com', 'rémy@example.com'],
    ['bob@example.com', 'bob@example.com'],
  ])('%j becomes %j', (input, out) => {
    expect(repair(input)).toBe(out);
  });

  it.each(['ｂob@example.com', 'not-an-address', 'a@b@example.com', 'bob@localhost'])('%j has no canonical form: null', (input) => {
    expect(repair(input)).toBeNull();
  });
});

/** A fresh database migrated up to the migration before the canonical-address one. */
async function migratedToJustBefore() {
  const s = plainSequelize(await createEmptyDatabase());
  const before = readdirSync(migrationsDir)
    .filter((f) => f.endsWith('.cjs') && f < MIGRATION)
    .sort()
    .at(-1)!;
  await migrateUp(s, undefined, { to: before }).catch(async (err: unknown) => {
    await s.close();
    throw err;
  });
  return s;
}

describe('the canonical-address migration on a database', () => {
  it('rewrites, merges duplicates into the oldest row with the most restrictive status, and moves history', async () => {
    const s = await migratedToJustBefore();
    try {
      const q = (sql: string, bind?: Record<string, unknown>) => rows<Record<string, unknown>>(s, sql, bind);

      await q(`INSERT INTO users (id, name, email, remaining_quota) VALUES (1, 'a', 'a@example.com', 100), (2, 'b', 'b@example.com', 100)`);
      await q(`INSERT INTO templates (id, user_id, name, subject, text) VALUES (1, 1, 't', 's', 'x')`);
      // User 1: one mailbox in five forms (ids 10..14); 14 unsubscribed, 12 bounced. Plus an
      // unrelated IDN contact (20), a contact with no canonical form (21). User 2 has the same
      // address (30): other users' rows are never merged.
      await q(`INSERT INTO contacts (id, user_id, email, status, name, tags, attributes, timezone) VALUES
        (10, 1, 'bob@ex\u00adample.com', 'active', NULL, '["a"]', '{"k":"ten","x":1}', NULL),
        (11, 1, 'bob@example.com', 'active', 'Bob', '["b"]', '{"k":"eleven","y":2}', 'Europe/Berlin'),
        (12, 1, 'bob@example.com\u200b', 'bounced', NULL, '[]', '{}', NULL),
        (13, 1, 'BOB@EXAMPLE.COM.', 'active', NULL, '["a","c"]', '{}', NULL),
        (14, 1, 'bob@ｅxample.com', 'unsubscribed', NULL, '[]', '{}', NULL),
        (20, 1, 'eve@bücher.de', 'active', NULL, '[]', '{}', NULL),
        (21, 1, 'ｂob@example.com', 'active', NULL, '[]', '{}', NULL),
        (30, 2, 'bob@ex\u00adample.com', 'active', NULL, '[]', '{}', NULL)`);
      await q(`INSERT INTO contact_status_events (contact_id, user_id, email, from_status, to_status, method, task_id)
               VALUES (14, 1, 'bob@ｅxample.com', 'active', 'unsubscribed', 'one_click', 100)`);
      await q(
        `INSERT INTO bounce_events (type, email, user_id, contact_id, source) VALUES ('hard_bounce', 'bob@example.com\u200b', 1, 12, 'dsn')`,
      );
      // Campaign 100 (sending): queued mail for 10, 11 and 13, sent mail for 12; it names 10, 13 and 20 explicitly.
      // Campaign 101 (completed): a sent message for 13 only.
      await q(`INSERT INTO tasks (id, name, status, from_address, created_by, contacts, templates, total_count, sent_count)
               VALUES (100, 'c', 'sending', 'a@example.com', 1, '[10, 13, 20]', '[1]', 5, 1),
                      (101, 'd', 'completed', 'a@example.com', 1, '[]', '[1]', 1, 1)`);
      await q(`INSERT INTO subtasks (task_id, contact_id, user_id, email, template_id, status, sent_at, message_id) VALUES
        (100, 10, 1, 'bob@ex\u00adample.com', 1, 'queued', NULL, NULL),
        (100, 11, 1, 'bob@example.com', 1, 'queued', NULL, NULL),
        (100, 12, 1, 'bob@example.com\u200b', 1, 'sent', now(), '<m12@x>'),
        (100, 13, 1, 'BOB@EXAMPLE.COM.', 1, 'queued', NULL, NULL),
        (100, 20, 1, 'eve@bücher.de', 1, 'queued', NULL, NULL),
        (101, 13, 1, 'BOB@EXAMPLE.COM.', 1, 'sent', now(), '<m13@x>')`);
      await q(`INSERT INTO suppressions (id, user_id, email, reason) VALUES
        (1, 1, 'bob@example.com', 'manual'), (2, 1, 'bob@example.com\u200b', 'hard_bounce'), (3, NULL, 'eve@BÜCHER.de', 'manual')`);

      expect(await migrateUp(s)).toContain(MIGRATION);

      const contacts = await q(`SELECT id::int, user_id, email, status, name, tags, attributes, timezone FROM contacts ORDER BY id`);
      expect(contacts.map((c) => [c.id, c.email, c.status])).toEqual([
        [10, 'bob@example.com', 'unsubscribed'],
        [20, 'eve@xn--bcher-kva.de', 'active'],
        [21, 'ｂob@example.com', 'active'], // no canonical form: left as it is
        [30, 'bob@example.com', 'active'],
      ]);
      const kept = contacts[0]!;
      expect(kept.name).toBe('Bob');
      expect(kept.timezone).toBe('Europe/Berlin');
      expect([...(kept.tags as string[])].sort()).toEqual(['a', 'b', 'c']);
      expect(kept.attributes).toEqual({ k: 'ten', x: 1, y: 2 });

      // History follows the kept row, and the merge itself is recorded.
      const events = await q(`SELECT contact_id::int, method, from_status, to_status, reason FROM contact_status_events ORDER BY id`);
      expect(events).toHaveLength(2);
      expect(events[0]).toMatchObject({ contact_id: 10, method: 'one_click', to_status: 'unsubscribed' });
      expect(events[1]).toMatchObject({ contact_id: 10, method: 'merge', from_status: 'active', to_status: 'unsubscribed' });
      expect(events[1]!.reason).toContain('bob@ｅxample.com');
      expect(await q(`SELECT contact_id::int FROM bounce_events`)).toEqual([{ contact_id: 10 }]);

      // Campaign 100 had one queued message per variant: none of them is sent any more (the
      // mailbox is unsubscribed now), the sent one stays as history, counts and credit follow.
      const subs = await q(`SELECT task_id::int, contact_id::int, email, status FROM subtasks ORDER BY task_id, contact_id`);
      expect(subs).toEqual([
        { task_id: 100, contact_id: 10, email: 'bob@ex\u00adample.com', status: 'cancelled' },
        { task_id: 100, contact_id: 11, email: 'bob@example.com', status: 'cancelled' },
        { task_id: 100, contact_id: 12, email: 'bob@example.com\u200b', status: 'sent' },
        { task_id: 100, contact_id: 13, email: 'BOB@EXAMPLE.COM.', status: 'cancelled' },
        { task_id: 100, contact_id: 20, email: 'eve@xn--bcher-kva.de', status: 'queued' },
        { task_id: 101, contact_id: 10, email: 'BOB@EXAMPLE.COM.', status: 'sent' },
      ]);
      const [task] = await q(`SELECT contacts, cancelled_count, status FROM tasks WHERE id = 100`);
      expect(task).toEqual({ contacts: [10, 20], cancelled_count: 3, status: 'sending' });
      expect(await q(`SELECT remaining_quota::int AS q FROM users WHERE id = 1`)).toEqual([{ q: 103 }]);

      expect(await q(`SELECT id::int, user_id, email FROM suppressions ORDER BY id`)).toEqual([
        { id: 1, user_id: 1, email: 'bob@example.com' },
        { id: 3, user_id: null, email: 'eve@xn--bcher-kva.de' },
      ]);
    } finally {
      await s.close();
    }
  });

  it('merges an active duplicate into an active kept row without a status event, and moves its queued mail', async () => {
    const s = await migratedToJustBefore();
    try {
      const q = (sql: string) => rows<Record<string, unknown>>(s, sql);
      await q(`INSERT INTO users (id, name, email, remaining_quota) VALUES (1, 'a', 'a@example.com', 0)`);
      await q(`INSERT INTO templates (id, user_id, name, subject, text) VALUES (1, 1, 't', 's', 'x')`);
      await q(
        `INSERT INTO contacts (id, user_id, email) VALUES (1, 1, 'ann@example.com'), (2, 1, 'ann@éxample.com'), (3, 1, 'ann@xn--xample-9ua.com')`,
      );
      await q(
        `INSERT INTO tasks (id, name, status, from_address, created_by, templates, total_count) VALUES (7, 'c', 'scheduled', 'a@example.com', 1, '[1]', 1)`,
      );
      await q(`INSERT INTO subtasks (task_id, contact_id, user_id, email, template_id) VALUES (7, 3, 1, 'ann@xn--xample-9ua.com', 1)`);
      await migrateUp(s);
      expect(await q(`SELECT id::int, email, status FROM contacts ORDER BY id`)).toEqual([
        { id: 1, email: 'ann@example.com', status: 'active' },
        { id: 2, email: 'ann@xn--xample-9ua.com', status: 'active' },
      ]);
      expect(await q(`SELECT count(*)::int AS n FROM contact_status_events`)).toEqual([{ n: 0 }]);
      expect(await q(`SELECT contact_id::int, email, status FROM subtasks`)).toEqual([
        { contact_id: 2, email: 'ann@xn--xample-9ua.com', status: 'queued' },
      ]);
    } finally {
      await s.close();
    }
  });
});
