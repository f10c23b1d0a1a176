/**
 * The dashboard in a real browser: Debian's Chromium, headless, driven by playwright-core (nothing
 * is downloaded). A real server on a loopback port, real deliveries to an SMTP server on loopback
 * until a small quota is spent, then: enter the admin token, see each service's quota, the rate
 * history, each campaign's owner and creation time, the latest failures and the maintenance jobs;
 * pause a campaign, see it paused; see a (service, mailbox provider) pair suspended by a server that
 * answers Gmail's 421 4.7.28, with its last deferral reply and the service's warm-up day and cap;
 * then at 390 px (a phone) and 1440 px wide, check that nothing
 * is wider than the viewport and that the bars and buttons are visible inside it. Leaves
 * screenshots in test-artifacts/dashboard-390.png and dashboard-1440.png.
 *
 * Without /usr/bin/chromium the test is skipped with a message (CI installs it).
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { DateTime } from 'luxon';
import type { Browser, Page } from 'playwright-core';
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

/** Every element of `selector` is visible, has a size, and lies within the viewport's width. */
async function expectInsideWidth(page: Page, selector: string, width: number, atLeast: number): Promise<void> {
  const items = page.locator(selector);
  const n = await items.count();
  expect([selector, n >= atLeast]).toEqual([selector, true]);
  for (let i = 0; i < n; i++) {
    const item = items.nth(i);
    expect([selector, i, await item.isVisible()]).toEqual([selector, i, true]);
    const box = (await item.boundingBox())!;
    const fits = box.width > 4 && box.height > 4 && box.x >= 0 && box.x + box.width <= width;
    expect([selector, i, width, fits ? 'inside' : box]).toEqual([selector, i, width, 'inside']);
  }
}

describe('dashboard in a browser', () => {
  let engine: Engine;
  let smtp: SmtpCatcher;
  /** Answers Gmail's "421 4.7.28" to every gmail.com recipient (as test/deliverability-scheduler.test.ts). */
  let throttler: SmtpCatcher;
  let warmupStart: string;
  let server: HttpServer;
  let browser: Browser | undefined;
  let address: string;
  let adminToken: string;
  let aliceToken: string;
  let paused: number;
  let relayId: number;

  beforeAll(async () => {
    if (!hasChromium) return;
    smtp = await startSmtpCatcher();
    throttler = await startSmtpCatcher({
      rcptReply: (to) =>
        to.endsWith('@gmail.com')
          ? { code: 421, message: '4.7.28 [127.0.0.1] Our system has detected an unusual rate of unsolicited mail - gsmtp' }
          : undefined,
    });
    engine = await createTestEngine({ schedulerTickMs: 50 });
    const admin = await engine.users.create({ name: 'Ada Admin', email: 'ada@example.test', quota: 1000, role: 'admin' });
    adminToken = await createToken(engine, admin.id);
    const alice = await userWithContacts(engine, 'Alice', 10);
    const bob = await userWithContacts(engine, 'Bob', 5);
    aliceToken = await createToken(engine, alice.userId);
    const relay = await engine.services.create({
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
    // Gina's mail is all for Gmail, through a service listed for her alone, on its warm-up's third day.
    const gina = await engine.users.create({ name: 'Gina', email: 'gina@example.test', quota: 100 });
    const ginaContacts = await engine.contacts.bulkCreate(
      gina.id,
      [1, 2, 3, 4].map((i) => ({ email: `gina${i}@gmail.com` })),
    );
    const ginaTemplate = await engine.templates.create(gina.id, { name: 't', subject: 'Hi', text: 'Hello' });
    warmupStart = DateTime.utc().minus({ days: 2 }).toISODate()!;
    await engine.services.create({
      name: 'relay-gmail',
      transport: { host: '127.0.0.1', port: throttler.port },
      sendingRate: 0.02, // 50 a second
      dailyQuota: 100,
      maxConnections: 1,
      userIds: [gina.id],
      deliverability: { warmup: [{ start: warmupStart, zone: 'UTC', caps: [50, 100, 500, 1000] }] },
    });
    await engine.campaigns.create({
      userId: gina.id,
      name: 'Gmail only',
      from: 'gina@example.test',
      templates: [ginaTemplate.id],
      contacts: ginaContacts.ids,
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
    relayId = relay.id;
    // One failure on record (the latest failures section reads error_logs).
    await rows(
      engine.apiDb,
      "INSERT INTO error_logs (error_type, message, count, service_id) VALUES ('smtp_550', '550 5.1.1 no such user', 3, $id)",
      {
        id: relayId,
      },
    );
    // The server first: its rate history counts the sends from here on.
    server = await createHttpServer(engine, { port: 0, host: '127.0.0.1', logger: createLogger('silent'), processMetrics: false });
    address = await server.listen();
    // Real deliveries until the fast service's quota is spent, so the page has figures to show.
    await engine.scheduler.start();
    await smtp.waitFor(6);
    await until(async () => (await engine.services.quota())[0]!.remainingQuota === 0, 20_000, 'relay-fast quota spent');
    // relay-gmail's google pair is suspended by the 421 4.7.28 (15 min, the built-in rule).
    await until(
      () =>
        engine.scheduler
          .status()
          .services.find((s) => s.name === 'relay-gmail')
          ?.deliverability.providers.some((p) => p.provider === 'google' && p.state === 'suspended') === true,
      20_000,
      'google suspended on relay-gmail',
    );

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
    await throttler?.stop();
  });

  (hasChromium ? it : it.skip)(
    'shows quota, rate history, owners, failures and jobs; pauses a campaign; fits 390 and 1440 px',
    async () => {
      const page = await browser!.newPage({ viewport: { width: 1440, height: 900 } });
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
      await services.nth(2).waitFor();
      expect(await services.count()).toBe(3);
      const fast = page.locator('#services .service', { hasText: 'relay-fast' });
      await fast.locator('.detail', { hasText: '6 used, 0 left of 6' }).waitFor();
      expect(await fast.locator('.detail').textContent()).toMatch(/resets in (\d+ h )?\d+ min/);
      expect(await fast.locator('.bar > span').evaluate((el) => (el as unknown as { style: { width: string } }).style.width)).toBe('100%');
      const hourly = page.locator('#services .service', { hasText: 'smtp-hourly' });
      expect(await hourly.locator('.detail').textContent()).toMatch(/left of 80/);

      // The send rate chart draws the status API's 15-minute history: one line per service, the
      // six sends of relay-fast already there on the first poll.
      await page.locator('#rate-chart polyline[data-service="relay-fast"]').waitFor({ state: 'attached' });
      expect(await page.locator('#rate-chart polyline').count()).toBe(3);
      expect(await page.locator('#rate-legend li[data-service="relay-fast"]').textContent()).toBe('relay-fast: 6 sent in 15 min');
      expect(await page.locator('#rate-now').textContent()).toMatch(/a minute over the last minute/);

      // Per mailbox provider: relay-gmail's google pair suspended by the server's 421 4.7.28, until
      // when, its rate against configured, the deferrals and the reply; the warm-up's day and cap.
      // Nothing was taken by the server (every gmail recipient got the 421): 0 sent today.
      const gmailRelay = page.locator('#services .service', { hasText: 'relay-gmail' });
      const google = gmailRelay.locator('.providers li[data-provider="google"]');
      await google.waitFor();
      expect(await google.getAttribute('data-state')).toBe('suspended');
      const googleText = (await google.textContent())!;
      const suspendedUntil = engine.scheduler.status().services.find((s) => s.name === 'relay-gmail')!.deliverability.providers[0]!
        .suspendedUntil!;
      expect(Date.parse(suspendedUntil) - Date.now()).toBeGreaterThan(10 * 60_000);
      expect(googleText).toMatch(/^google suspended until \S/);
      expect(googleText).toMatch(/ 25\/s of 50\/s · [1-9]\d* deferred · 0 sent today · warm-up day 3, cap 500 ?last deferral/);
      expect(await google.locator('.reply').textContent()).toMatch(/^last deferral just now: 421 4\.7\.28 \[127\.0\.0\.1\] Our system/);
      expect(await google.locator('.reply').getAttribute('title')).toMatch(/^gmail-4\.7\.28-rate-limited at /);
      expect(await gmailRelay.locator('.providers li.warmup').textContent()).toMatch(
        /^Warm-up \(all providers\): day 3, cap 500, 0 sent today$/,
      );
      // A pair that was never deferred: relay-fast's recipients at example.test, at full rate.
      const plain = fast.locator('.providers li[data-provider="other:example.test"]');
      expect(await plain.getAttribute('data-state')).toBe('normal');
      expect(await plain.textContent()).toMatch(/^other:example\.test normal full rate · 0 deferred · \d+ sent today$/);

      // Each sending campaign's completion forecast (its figures: test/forecast.test.ts).
      const gmailOnly = page.locator('#campaigns .campaign', { hasText: 'Gmail only' });
      await gmailOnly.locator('.detail', { hasText: 'expected done' }).waitFor();
      expect(await gmailOnly.locator('.detail').textContent()).toMatch(/ · expected done \S.* \(in (now|\d+ (min|h|d)\b.*)\)/);

      // Owner and creation time of each campaign; the latest failures; the maintenance jobs.
      const launch = page.locator('#campaigns .campaign', { hasText: 'Product launch' });
      expect(await launch.locator('.meta').textContent()).toMatch(/^Bob · created \S/);
      // (relay-gmail's 421 is on record too.)
      const failure = page.locator('#failures .failure', { hasText: 'smtp_550' });
      await failure.waitFor();
      expect(await failure.textContent()).toContain('smtp_550 · relay-fast · ×3');
      expect(await failure.textContent()).toContain('550 5.1.1 no such user');
      const jobNames = (engine.jobs.list() as { name: string }[]).map((j) => j.name);
      expect(jobNames.length).toBeGreaterThan(0);
      expect(
        await page.locator('#jobs .job').evaluateAll((els) => els.map((e) => (e as unknown as { dataset: { name: string } }).dataset.name)),
      ).toEqual(jobNames);

      // One progress bar per campaign; pause one and see it paused.
      const row = page.locator(`#campaigns .campaign[data-id="${paused}"]`);
      await row.locator('.state', { hasText: 'sending' }).waitFor();
      expect(await page.locator('#campaigns .campaign').count()).toBe(3);
      expect(await row.locator('button[data-action="resume"]').isDisabled()).toBe(true);
      await row.locator('button[data-action="pause"]').click();
      await page.locator(`#campaigns .campaign[data-id="${paused}"][data-status="paused"]`).waitFor();
      expect(await row.locator('.state').textContent()).toBe('paused');
      expect(await row.locator('button[data-action="resume"]').isEnabled()).toBe(true);
      expect(await rows(engine.apiDb, 'SELECT status FROM tasks WHERE id = $id', { id: paused })).toEqual([{ status: 'paused' }]);
      expect(await row.locator('.meta').textContent()).toMatch(/^Alice · created \S/);
      expect(await row.locator('.detail').textContent()).toMatch(/\d+% · \d+ sent, 0 failed, 0 cancelled, \d+ claimed, \d+ queued of 10/);
      expect(await hourly.locator('.detail').textContent()).toContain('one send every 3,600 s');
      expect(await fast.locator('.detail').textContent()).toContain('no wait between sends');
      // Live figures from the scheduler: the concurrency of each service it runs, and the engines alive.
      // In flight: sends under way now (status.services[].in_flight), none once the quota is spent.
      expect(await fast.locator('.detail').textContent()).toMatch(/ · 1 of 1 concurrent · 0 sending now · opportunistic$/); // then the TLS mode (6739498)
      expect(await page.locator('#updated').textContent()).toMatch(/ · 0 sending now · \d+ queued · 1 engine running$/);

      // A safety breaker's pause (the state a trip writes: test/breaker-visibility.test.ts trips one
      // for real) shows above the campaigns and on the campaign's row, with its figures.
      const reason = 'complaint breaker: 4 complaints of 1000 sent (0.40 %, limit 0.3 %)';
      await rows(engine.apiDb, "UPDATE tasks SET status = 'paused', pause_reason = $reason WHERE name = 'Product launch'", { reason });
      const notice = page.locator('#paused-notice li', { hasText: 'Product launch' });
      await notice.waitFor();
      expect(await notice.textContent()).toBe(`“Product launch” paused itself: ${reason}. Resume it to re-arm the breaker.`);
      await launch.locator('.detail', { hasText: `paused: ${reason}` }).waitFor();
      expect(await launch.getAttribute('data-pause-cause')).toBe('complaint_breaker');
      expect(await launch.locator('.state').getAttribute('title')).toBe(`paused: ${reason}`);
      // Paused by hand: no notice, no reason.
      expect(await row.getAttribute('data-pause-cause')).toBe('manual');
      expect(await page.locator('#paused-notice li').count()).toBe(1);

      // Both widths: nothing wider than the viewport; bars and buttons visible inside it.
      await mkdir(artifacts, { recursive: true });
      for (const width of [390, 1440]) {
        await page.setViewportSize({ width, height: 900 });
        const scrollWidth = await page.evaluate(
          () => (globalThis as unknown as { document: { documentElement: { scrollWidth: number } } }).document.documentElement.scrollWidth,
        );
        expect([width, scrollWidth]).toEqual([width, width]);
        await expectInsideWidth(page, '#services .bar', width, 3);
        await expectInsideWidth(page, '#services .providers > li', width, 3);
        await expectInsideWidth(page, '#campaigns .bar', width, 3);
        await expectInsideWidth(page, '#campaigns button', width, 9);
        await expectInsideWidth(page, '#forget', width, 1);
        await expectInsideWidth(page, '#paused-notice', width, 1);
        await expectInsideWidth(page, '#rate-chart', width, 1);
        await page.screenshot({ path: `${artifacts}dashboard-${width}.png`, fullPage: true });
        expect(existsSync(`${artifacts}dashboard-${width}.png`)).toBe(true);
      }
      expect(errors).toEqual([]);
    },
  );

  (hasChromium ? it : it.skip)(
    'works for a plain user: their own campaigns and what is left of each service, no process-wide figures, no error',
    async () => {
      const page = await browser!.newPage({ viewport: { width: 390, height: 900 } });
      const errors: string[] = [];
      page.on('pageerror', (e) => errors.push(e.message));
      await page.goto(address);
      await page.locator('#token').fill(aliceToken);
      await page.locator('#token-form button[type=submit]').click();
      await page.locator('#who', { hasText: 'Alice' }).waitFor();
      // Her campaign, not Bob's; the services she may send through, each with what is left today.
      await page.locator('#campaigns .campaign', { hasText: 'Autumn newsletter' }).waitFor();
      expect(await page.locator('#campaigns .campaign').count()).toBe(1);
      const services = page.locator('#services .service');
      await services.nth(1).waitFor();
      for (const detail of await services.locator('.detail').allTextContents()) {
        expect(detail).toMatch(/(left today \(shared service\)|used, \d+ left of \d+)/);
        expect(detail).not.toMatch(/undefined|NaN/);
      }
      // The throttles of the shared services she may use, without their send counts or reply texts.
      const pair = page
        .locator('#services .service', { hasText: 'relay-fast' })
        .locator('.providers li[data-provider="other:example.test"]');
      await pair.waitFor();
      expect(await pair.textContent()).toMatch(/^other:example\.test normal full rate · 0 deferred$/);
      expect(await page.locator('#services .service', { hasText: 'relay-gmail' }).count()).toBe(0);
      // The rate chart, engines and sends under way are process-wide: not shown to her.
      expect(await page.locator('#rate-section').isHidden()).toBe(true);
      expect(await page.locator('#updated').textContent()).toMatch(/^Updated .* · \d+ queued$/);
      expect(await page.locator('#error').textContent()).toBe('');
      expect(errors).toEqual([]);
      await page.close();
    },
  );
});
