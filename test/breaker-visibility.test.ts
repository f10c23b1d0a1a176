/**
 * Why a campaign stopped, wherever a person or a monitor looks: a safety breaker trips on injected
 * complaints (and hard bounces), an admin pauses a user, a campaign is paused by hand; the reason
 * shows in engine.breakers.paused(), in GET /api/scheduler/status (admin and user views), in
 * `fairsend scheduler status`, and in /metrics (promtool-clean gauges). Resuming re-arms the
 * breaker and the series goes away (the breaker's own re-arm test is in test/suppressions.test.ts).
 */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { Writable } from 'node:stream';
import { runCli } from '../src/cli/index.js';
import { rows } from './helpers/db.js';
import { httpFixture, type HttpFixture } from './helpers/http.js';
import { userWithContacts } from './helpers/scheduler.js';

const PROMTOOL = '/usr/bin/promtool';

function promtool(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(PROMTOOL, ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    p.stdout.on('data', (d: Buffer) => (output += d.toString()));
    p.stderr.on('data', (d: Buffer) => (output += d.toString()));
    p.on('error', reject);
    p.on('close', (code) => resolve({ code, output }));
    p.stdin.end(text);
  });
}

/** Prometheus text -> one metric's series: labels and value. */
function series(text: string, name: string): { labels: Record<string, string>; value: number }[] {
  const out: { labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    const m = /^([a-z_:]+)(?:\{([^}]*)\})? (\S+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    out.push({
      labels: Object.fromEntries([...(m[2] ?? '').matchAll(/(\w+)="([^"]*)"/g)].map((x) => [x[1]!, x[2]!])),
      value: Number(m[3]),
    });
  }
  return out;
}

describe('breaker and pause reasons in status, CLI and metrics', () => {
  let f: HttpFixture;
  let hal: { id: number; token: string };
  let tripped: number;
  let bounced: number;
  let byHand: number;
  let umaCampaign: number;
  let umaId: number;
  const COMPLAINT = 'complaint breaker: 1 complaints of 4 sent (25.00 %, limit 0.3 %)';
  const HARD = 'hard-bounce breaker: 1 hard bounces of 2 sent (50.00 %, limit 5 %)';

  const campaign = async (userId: number, templateId: number, contacts: number[], name: string) =>
    (await f.engine.campaigns.create({ userId, name, from: 'me@example.test', templates: [templateId], contacts })).id;

  beforeAll(async () => {
    f = await httpFixture({ engine: { breakerMinSent: 2 } });
    // Each campaign keeps queued mail after the reports (a campaign with none left completes).
    const h = await userWithContacts(f.engine, 'Hal', 12);
    hal = { id: h.userId, token: (await f.call('POST', `/api/users/${h.userId}/token`, f.adminToken)).json<{ token: string }>().token };
    tripped = await campaign(h.userId, h.templateId, h.contactIds.slice(0, 6), 'Spring sale');
    bounced = await campaign(h.userId, h.templateId, h.contactIds.slice(6, 10), 'Old list');
    byHand = await campaign(h.userId, h.templateId, h.contactIds.slice(10, 12), 'Held back');
    const u = await userWithContacts(f.engine, 'Uma', 1);
    umaId = u.userId;
    umaCampaign = await campaign(u.userId, u.templateId, u.contactIds, 'Uma news');
    while ((await f.engine.scheduler.processScheduledTasks()).length > 0);
    // Injected sends: some of each campaign's mail sent (subtasks and counters, as the scheduler
    // writes them), the rest still queued, so the campaigns stay live.
    const send = async (taskId: number, contactIds: number[]) => {
      await rows(f.engine.apiDb, "UPDATE subtasks SET status = 'sent' WHERE task_id = $t AND contact_id = ANY($c::bigint[])", {
        t: taskId,
        c: contactIds,
      });
      await rows(f.engine.apiDb, 'UPDATE tasks SET sent_count = $n WHERE id = $t', { t: taskId, n: contactIds.length });
    };
    await send(tripped, h.contactIds.slice(0, 4));
    await send(bounced, h.contactIds.slice(6, 8));
    expect((await f.engine.bounces.record([{ type: 'complaint', email: 'hal1@example.test', campaignId: tripped }])).breakers).toEqual([
      { campaignId: tripped, reason: COMPLAINT },
    ]);
    const r = await f.engine.bounces.record([{ type: 'hard_bounce', email: 'hal7@example.test', campaignId: bounced }]);
    expect(r.breakers).toEqual([{ campaignId: bounced, reason: HARD }]);
    await f.engine.campaigns.pause(byHand);
    await f.engine.breakers.pauseUser(umaId, 'complaints across campaigns');
  });
  afterAll(async () => {
    await f.close();
  });

  it('engine.breakers.paused() says which campaigns and users are paused, and why', async () => {
    expect(await f.engine.breakers.paused()).toEqual({
      campaigns: [
        { id: tripped, userId: hal.id, name: 'Spring sale', cause: 'complaint_breaker', reason: COMPLAINT },
        { id: bounced, userId: hal.id, name: 'Old list', cause: 'hard_bounce_breaker', reason: HARD },
        { id: byHand, userId: hal.id, name: 'Held back', cause: 'manual', reason: null },
        { id: umaCampaign, userId: umaId, name: 'Uma news', cause: 'user_pause', reason: 'user paused: complaints across campaigns' },
      ],
      users: [{ id: umaId, name: 'Uma', reason: 'complaints across campaigns' }],
    });
    expect((await f.engine.breakers.paused({ userId: umaId })).campaigns.map((c) => c.id)).toEqual([umaCampaign]);
  });

  it('shows the reasons in the scheduler status: every one to an admin, their own to a user', async () => {
    const admin = (await f.call('GET', '/api/scheduler/status', f.adminToken)).json<Record<string, unknown>>();
    expect(admin.paused_campaigns).toEqual([
      { id: tripped, user_id: hal.id, name: 'Spring sale', cause: 'complaint_breaker', reason: COMPLAINT },
      { id: bounced, user_id: hal.id, name: 'Old list', cause: 'hard_bounce_breaker', reason: HARD },
      { id: byHand, user_id: hal.id, name: 'Held back', cause: 'manual', reason: null },
      { id: umaCampaign, user_id: umaId, name: 'Uma news', cause: 'user_pause', reason: 'user paused: complaints across campaigns' },
    ]);
    expect(admin.paused_users).toEqual([{ id: umaId, name: 'Uma', reason: 'complaints across campaigns' }]);

    const mine = (await f.call('GET', '/api/scheduler/status', hal.token)).json<Record<string, unknown>>();
    expect((mine.paused_campaigns as { id: number }[]).map((c) => c.id)).toEqual([tripped, bounced, byHand]);
    expect(mine.account_pause).toBeNull();
    expect(mine).not.toHaveProperty('paused_users');
    const uma = await f.user('Uma2');
    await f.engine.breakers.pauseUser(uma.id, 'a test of the user view');
    expect((await f.call('GET', '/api/scheduler/status', uma.token)).json()).toMatchObject({
      account_pause: 'a test of the user view',
      paused_campaigns: [],
    });
    await f.engine.breakers.resumeUser(uma.id);
  });

  it('prints them in `fairsend scheduler status`', async () => {
    let out = '';
    const code = await runCli(['node', 'fairsend', 'scheduler', 'status'], {
      stdout: new Writable({
        write(chunk: Buffer, _enc, cb) {
          out += chunk.toString();
          cb();
        },
      }),
      stderr: new Writable({ write: (_c, _e, cb) => cb() }),
      env: { DATABASE_URL: f.engine.config.databaseUrl!, LOG_LEVEL: 'silent' },
    });
    expect(code).toBe(0);
    expect(out).toContain(`paused campaign ${tripped} Spring sale: ${COMPLAINT}\n`);
    expect(out).toContain(`paused campaign ${byHand} Held back: by hand\n`);
    expect(out).toContain(`paused user ${umaId} Uma: complaints across campaigns\n`);
  });

  it('exposes them in /metrics, promtool-clean; resuming re-arms and the tripped series goes away', async () => {
    expect(existsSync(PROMTOOL)).toBe(true); // apt-get install -y prometheus (.ci/run does)
    const text = (await f.call('GET', '/metrics', f.adminToken)).body;
    expect(await promtool(text)).toEqual({ code: 0, output: '' });
    const byCause = Object.fromEntries(series(text, 'fairsend_campaigns_paused').map((s) => [s.labels.cause, s.value]));
    expect(byCause).toEqual({ complaint_breaker: 1, hard_bounce_breaker: 1, user_pause: 1, manual: 1 });
    expect(series(text, 'fairsend_campaign_breaker_tripped')).toEqual([
      { labels: { campaign_id: String(tripped), campaign: 'Spring sale', breaker: 'complaint' }, value: 1 },
      { labels: { campaign_id: String(bounced), campaign: 'Old list', breaker: 'hard_bounce' }, value: 1 },
    ]);
    expect(series(text, 'fairsend_users_paused')).toEqual([{ labels: {}, value: 1 }]);

    await f.engine.campaigns.resume(tripped);
    const after = (await f.call('GET', '/metrics', f.adminToken)).body;
    expect(series(after, 'fairsend_campaign_breaker_tripped').map((s) => s.labels.campaign_id)).toEqual([String(bounced)]);
    expect(series(after, 'fairsend_campaigns_paused').find((s) => s.labels.cause === 'complaint_breaker')!.value).toBe(0);
    expect(await f.engine.campaigns.progress(tripped)).toMatchObject({ status: 'sending', pauseReason: null });
    // Re-armed: the next complaint over the limit trips it again, and the series is back.
    expect((await f.engine.bounces.record([{ type: 'complaint', email: 'hal2@example.test', campaignId: tripped }])).breakers).toHaveLength(
      1,
    );
    const again = (await f.call('GET', '/metrics', f.adminToken)).body;
    expect(series(again, 'fairsend_campaign_breaker_tripped').map((s) => s.labels.campaign_id)).toEqual([String(tripped), String(bounced)]);
  });
});
