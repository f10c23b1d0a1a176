/**
 * The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core (nothing
 * is downloaded). A real server on a loopback port, real deliveries to an SMTP server on loopback
 * until a small quota is spent, then: enter the admin token, see each service's quota, pause a
 * campaign, see it paused. Leaves a screenshot in test-artifacts/dashboard.png.
 *
 * Without /usr/bin/chromium the test is skipped with a message (CI installs it).
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import type { Browser } from 'playwright-core';
import type { Engine } from '../src/engine.js';
import { createLogger } from '../services/kernel/logger.js';
import { createHttpServer, type HttpServer } from '../src/http/server.js';
import { startSmtpCatcher, type SmtpCatcher } from '../src/smtp-catcher.js';
import { createToken } from '../services/auth.js';
import { createTestEngine, rows } from './helpers/db.js';
import { until, userWithContacts } from './helpers/scheduler.js';

const CHROMIUM = '/usr/bin/chromium';
const hasChromium = existsSync(CHROMIUM);
if (!hasChromium) {
  console.warn(`[dashboard test] SKIPPED: ${CHROMIUM} not found. Install Debian's Chromium (apt-get install -y chromium) to run it.`);
}
const artifacts = fileURLToPath(new URL('../test-artifacts/', import.meta.url));

describe('dashboard in a browser', () => {
  let engine: Engine;
  let smtp: SmtpCatcher;
  let server: HttpServer;
  let browser: Browser | undefined;
  let address: string;
  let adminToken: string;
  let paused: number;

  beforeAll(async () => {
    if (!hasChromium) return;
    smtp = await startSmtpCatcher();
    engine = await createTestEngine({ schedulerTickMs: 50 });
    const admin = await engine.users.create({ name: 'Ada Admin', email: 'ada@example.test', quota: 1000, role: 'admin' });
    adminToken = await createToken(engine, admin.id);
    const alice = await userWithContacts(engine, 'Alice', 10);
    const bob = await userWithContacts(engine, 'Bob', 5);
    await engine.services.create({
      name: 'relay-fast',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 0,
      dailyQuota: 6,
      maxConnections: 1,
    });
    await engine.services.create({
      name: 'smtp-hourly',
      transport: { host: '127.0.0.1', port: smtp.port },
      sendingRate: 3600,
      dailyQuota: 80,
      quotaTimezone: 'Asia/Tokyo',
      maxConnections: 1,
    });
    const news = await engine.campaigns.create({
      userId: alice.userId,
      name: 'Autumn newsletter',
      from: 'news@alice.example.test',
      templates: [alice.templateId],
      contacts: alice.contactIds,
    });
    await engine.campaigns.create({
      userId: bob.userId,
      name: 'Product launch',
      from: 'bob@example.test',
      templates: [bob.templateId],
      contacts: bob.contactIds,
    });
    paused = news.id;
    // Real deliveries until the fast service's quota is spent, so the page has figures to show.
    await engine.scheduler.start();
    await smtp.waitFor(6);
    await until(async () => (await engine.services.quota())[0]!.remainingQuota === 0, 20_000, 'relay-fast quota spent');

    server = await createHttpServer(engine, { port: 0, host: '127.0.0.1', logger: createLogger('silent'), processMetrics: false });
    address = await server.listen();
    const { chromium } = await import('playwright-core');
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-quic',
        '--no-first-run',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
  });

  afterAll(async () => {
    await browser?.close();
    await server?.close();
    await engine?.close();
    await smtp?.stop();
  });

  (hasChromium ? it : it.skip)('shows quota per service, pauses a campaign, and keeps a screenshot', async () => {
    const page = await browser!.newPage({ viewport: { width: 1100, height: 900 } });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => {
      if (m.type() === 'error') errors.push(m.text());
    });

    await page.goto(address);
    await page.locator('#token').fill(adminToken);
    await page.locator('#token-form button[type=submit]').click();
    await page.locator('#who', { hasText: 'Ada Admin (admin)' }).waitFor();
    // (No DOM typings in this project: the page's globals are typed by hand.)
    const stored = await page.evaluate(() =>
      (globalThis as unknown as { localStorage: { getItem(k: string): string | null } }).localStorage.getItem('fairsend.token'),
    );
    expect(stored).toBe(adminToken);

    // One bar per service, with used and remaining quota and the time to reset.
    const services = page.locator('#services .service');
    await services.nth(1).waitFor();
    expect(await services.count()).toBe(2);
    const fast = page.locator('#services .service', { hasText: 'relay-fast' });
    await fast.locator('.detail', { hasText: '6 used, 0 left of 6' }).waitFor();
    expect(await fast.locator('.detail').textContent()).toMatch(/resets in (\d+ h )?\d+ min/);
    expect(await fast.locator('.bar > span').evaluate((el) => (el as unknown as { style: { width: string } }).style.width)).toBe('100%');
    const hourly = page.locator('#services .service', { hasText: 'smtp-hourly' });
    expect(await hourly.locator('.detail').textContent()).toMatch(/left of 80/);

    // The send rate chart draws the samples.
    await page.locator('#rate-chart polyline').waitFor({ state: 'attached' });
    expect(await page.locator('#rate-now').textContent()).toMatch(/a minute over the last minute/);

    // One progress bar per campaign; pause one and see it paused.
    const row = page.locator(`#campaigns .campaign[data-id="${paused}"]`);
    await row.locator('.state', { hasText: 'sending' }).waitFor();
    expect(await page.locator('#campaigns .campaign').count()).toBe(2);
    expect(await row.locator('button[data-action="resume"]').isDisabled()).toBe(true);
    await row.locator('button[data-action="pause"]').click();
    await page.locator(`#campaigns .campaign[data-id="${paused}"][data-status="paused"]`).waitFor();
    expect(await row.locator('.state').textContent()).toBe('paused');
    expect(await row.locator('button[data-action="resume"]').isEnabled()).toBe(true);
    expect(await rows(engine.apiDb, 'SELECT status FROM tasks WHERE id = $id', { id: paused })).toEqual([{ status: 'paused' }]);
    expect(await row.locator('.detail').textContent()).toMatch(/\d+% · \d+ sent, 0 failed, 0 cancelled, \d+ in flight, \d+ queued of 10/);
    expect(await hourly.locator('.detail').textContent()).toContain('one send every 3,600 s');
    expect(await fast.locator('.detail').textContent()).toContain('no wait between sends');
    // Live figures from the scheduler: the concurrency of each service it runs, and the engines alive.
    expect(await fast.locator('.detail').textContent()).toMatch(/ · 1 of 1 concurrent$/);
    expect(await page.locator('#updated').textContent()).toMatch(/ · 1 engine running$/);

    await mkdir(artifacts, { recursive: true });
    await page.screenshot({ path: `${artifacts}dashboard.png`, fullPage: true });
    expect(existsSync(`${artifacts}dashboard.png`)).toBe(true);
    expect(errors).toEqual([]);
  });
});
