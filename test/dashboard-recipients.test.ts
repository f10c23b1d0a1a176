/**
 * The dashboard's recipients view in a real browser (Debian's Chromium, headless, playwright-core),
 * against a real server and real deliveries: a campaign whose server refused one recipient shows it
 * with the server's reply, and the retry button re-queues it (after the confirmation), after which
 * it is delivered with the same Message-ID.
 *
 * Without /usr/bin/chromium the test is skipped with a message (CI installs it).
 */
import { existsSync } from 'node:fs';
import type { Browser } from 'playwright-core';
import type { Engine } from '../src/engine.js';
import { createLogger } from '../services/kernel/logger.js';
import { createHttpServer, type HttpServer } from '../src/http/server.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { createToken } from '../services/auth.js';
import { createTestEngine } from './helpers/db.js';
import { until, userWithContacts } from './helpers/scheduler.js';

const CHROMIUM = '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) {
  console.warn(`[dashboard-recipients test] SKIPPED: ${CHROMIUM} not found. Install Debian's Chromium (apt-get install -y chromium).`);
}

describe('dashboard recipients view', () => {
  let engine: Engine;
  let smtp: SmtpCatcher;
  let server: HttpServer;
  let browser: Browser | undefined;

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await engine?.close();
    await smtp?.stop();
  });

  (hasChromium ? it : it.skip)(
    'lists the failed recipient with the server’s reply and retries it',
    async () => {
      let refused = false;
      const firstIds: string[] = [];
      smtp = await startSmtpCatcher({
        dataReply: (m) => {
          if (m.to[0] !== 'dash2@example.test' || refused) return undefined;
          refused = true;
          firstIds.push(/^Message-ID:\s*(\S+)/im.exec(m.raw.toString('utf8'))?.[1] ?? '');
          return { code: 554, message: '5.7.1 refused by policy' };
        },
      });
      engine = await createTestEngine({ schedulerTickMs: 50 });
      const u = await userWithContacts(engine, 'Dash', 3, { quota: 4 });
      // An admin's token: the dashboard's first poll fails for a plain user's token on this main
      // (renderRate reads rate_history, which the user's status view does not carry); reported.
      const admin = await engine.users.create({ name: 'Admin', email: 'admin@example.test', quota: 1, role: 'admin' });
      const token = await createToken(engine, admin.id);
      const c = await engine.campaigns.create({
        userId: u.userId,
        name: 'Winter news',
        from: 'news@example.test',
        templates: [u.templateId],
        contacts: u.contactIds,
      });
      await engine.services.create({ name: 'relay', transport: { host: '127.0.0.1', port: smtp.port }, sendingRate: 0, dailyQuota: 100 });
      server = await createHttpServer(engine, { port: 0, host: '127.0.0.1', logger: createLogger('silent'), processMetrics: false });
      const address = await server.listen();
      await engine.scheduler.start();
      await until(async () => (await engine.campaigns.get(c.id)).status === 'completed', 30_000, 'the first pass');

      const { chromium } = await import('playwright-core');
      browser = await chromium.launch({
        executablePath: CHROMIUM,
        args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run'],
      });
      const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      const dialogs: string[] = [];
      page.on('dialog', (d) => {
        dialogs.push(d.message());
        void d.accept();
      });
      await page.goto(address);
      await page.locator('#token').fill(token);
      await page.locator('#token-form button[type=submit]').click();
      const row = page.locator(`#campaigns .campaign[data-id="${c.id}"]`);
      await row.waitFor({ timeout: 15_000 }).catch(async (err: unknown) => {
        throw new Error(
          `no campaign row: page errors ${JSON.stringify(errors)}; #error ${await page.locator('#error').textContent()}; ${String(err)}`,
        );
      });
      await row.locator('button[data-open="recipients"]').click();
      // Failed and unknown by default: the one refused, with what the server said.
      const failed = page.locator('#recipients .recipient');
      await failed.first().waitFor();
      expect(await failed.count()).toBe(1);
      expect(await failed.first().textContent()).toContain('dash2@example.test · failed · 1 attempt');
      expect(await failed.first().textContent()).toContain('permanent: 554 5.7.1 refused by policy');
      expect(await page.locator('#recipients-name').textContent()).toBe('“Winter news”');
      // All of them.
      await page.locator('#recipients-status').selectOption('');
      await page.locator('#recipients .recipient').nth(2).waitFor();
      expect(await page.locator('#recipients .recipient[data-status="sent"]').count()).toBe(2);

      await page.locator('#recipients-retry').click();
      await page.locator('#recipients-result', { hasText: '1 re-queued (1 failed, 0 unknown)' }).waitFor();
      expect(dialogs).toHaveLength(1);
      expect(await page.locator('#recipients-result').textContent()).toContain('0 credit left');
      await until(async () => (await engine.campaigns.progress(c.id)).sent === 3, 30_000, 'the retried message to be sent');
      const delivered = smtp.messages.find((m) => m.envelopeTo[0] === 'dash2@example.test');
      expect(delivered?.parsed.messageId).toBe(firstIds[0]);
      await page.locator('#recipients-status').selectOption('failed,unknown');
      await page.locator('#no-recipients').waitFor({ state: 'visible' });
      expect(errors).toEqual([]);
    },
    90_000,
  );
});
