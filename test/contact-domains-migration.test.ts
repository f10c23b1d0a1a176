/**
 * The contact-domain migration on an existing database: contacts written before it get their
 * stored domain (lower-cased, after the last `@`), new and changed addresses keep it in step, the
 * index for the domain walk is there, and a generation on the migrated data joins it to
 * mail_domains. Down removes the column and the index.
 */
import { readdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { migrationsDir } from '../src/paths.js';
import { migrateUp } from '../src/migrator.js';
import { createEmptyDatabase, plainSequelize, rows } from './helpers/db.js';

const MIGRATION = '20261130920001-contact-domains.cjs';
const require = createRequire(import.meta.url);

describe('the contact-domain migration on a database', () => {
  it('fills the domain of existing contacts, keeps it in step with the address, and goes down cleanly', async () => {
    const s = plainSequelize(await createEmptyDatabase());
    try {
      const before = readdirSync(migrationsDir)
        .filter((f) => f.endsWith('.cjs') && f < MIGRATION)
        .sort()
        .at(-1)!;
      await migrateUp(s, undefined, { to: before });
      const q = <T = Record<string, unknown>>(sql: string, bind?: Record<string, unknown>) => rows<T>(s, sql, bind);
      await q(`INSERT INTO users (id, name, email, remaining_quota) VALUES (1, 'a', 'a@example.com', 100)`);
      // Rows as older versions may have stored them: upper-case domains.
      await q(`INSERT INTO contacts (id, user_id, email) VALUES
                 (1, 1, 'bob@Example.COM'), (2, 1, 'ann@gmail.com'), (3, 1, 'x.y@ACME.io'), (4, 1, 'eve@gmail.com')`);

      expect(await migrateUp(s)).toContain(MIGRATION);
      expect(await q(`SELECT id::int, domain FROM contacts ORDER BY id`)).toEqual([
        { id: 1, domain: 'example.com' },
        { id: 2, domain: 'gmail.com' },
        { id: 3, domain: 'acme.io' },
        { id: 4, domain: 'gmail.com' },
      ]);
      expect(await q(`SELECT indexdef FROM pg_indexes WHERE indexname = 'contacts_user_domain_idx'`)).toEqual([
        { indexdef: 'CREATE INDEX contacts_user_domain_idx ON public.contacts USING btree (user_id, domain)' },
      ]);
      // New rows and changed addresses: PostgreSQL computes it; it cannot be written by hand.
      await q(`INSERT INTO contacts (id, user_id, email) VALUES (5, 1, 'new@Startup.IO')`);
      await q(`UPDATE contacts SET email = 'bob@Other.org' WHERE id = 1`);
      expect(await q(`SELECT id::int, domain FROM contacts WHERE id IN (1, 5) ORDER BY id`)).toEqual([
        { id: 1, domain: 'other.org' },
        { id: 5, domain: 'startup.io' },
      ]);
      await expect(q(`UPDATE contacts SET domain = 'x.com' WHERE id = 2`)).rejects.toThrow(/can only be updated to DEFAULT/);

      // Down: the column and the index go, the contacts stay.
      const mod = require(`${migrationsDir}/${MIGRATION}`) as { down: (qi: unknown) => Promise<void> };
      await mod.down(s.getQueryInterface());
      expect(
        await q(`SELECT column_name FROM information_schema.columns WHERE table_name = 'contacts' AND column_name = 'domain'`),
      ).toEqual([]);
      expect(await q(`SELECT indexname FROM pg_indexes WHERE indexname = 'contacts_user_domain_idx'`)).toEqual([]);
      expect(await q(`SELECT count(*)::int AS n FROM contacts`)).toEqual([{ n: 5 }]);
    } finally {
      await s.close();
    }
  });
});
