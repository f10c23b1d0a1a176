/** `fairsend campaign ...`: create, list, show, status (--watch), pause, resume, cancel, recipients, retry. */
import { readFile } from 'node:fs/promises';
import { Option, type Command } from 'commander';
import cliProgress from 'cli-progress';
import type { Engine } from '../engine.js';
import { ValidationError } from '../../services/kernel/errors.js';
import type { CampaignProgress } from '../../services/campaigns.js';
import type { Recipient } from '../../services/campaign-recipients.js';
import { table } from './format.js';
import { createRateMeter, formatEta, formatRate } from './rate.js';
import { FINAL, intArg, jsonOption, stopSignal, wait, when, type CliContext } from './context.js';

const STATUSES = ['scheduled', 'sending', 'paused', 'completed', 'cancelled'];

export function registerCampaigns(program: Command, ctx: CliContext): void {
  const { io, out, json, withEngine } = ctx;
  const campaign = program.command('campaign').description('campaigns');
  campaign
    .command('create')
    .description('create a campaign from a JSON file holding the input of engine.campaigns.create')
    .requiredOption('-f, --file <path>', 'campaign JSON file')
    .action(async (o: { file: string }) => {
      let text: string;
      try {
        text = await readFile(o.file, 'utf8');
      } catch (err) {
        throw new Error(`cannot read ${o.file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
      }
      let input: unknown;
      try {
        input = JSON.parse(text);
      } catch (err) {
        throw new Error(`${o.file} is not valid JSON: ${(err as Error).message}`, { cause: err });
      }
      if (!input || typeof input !== 'object' || Array.isArray(input))
        throw new ValidationError([{ path: '', message: `${o.file} must hold one JSON object` }]);
      await withEngine(async (engine) => {
        const c = await engine.campaigns.create(input as Parameters<Engine['campaigns']['create']>[0]);
        out(`campaign #${c.id} ${c.name}: ${c.status}, ${c.recipients} recipients reserved, scheduled at ${when(c.scheduledAt)}\n`);
      });
    });
  campaign
    .command('list')
    .description('campaigns with their status and progress, newest first')
    .addOption(new Option('--user <id>', "only this user's campaigns").argParser(intArg('user', 1)))
    .addOption(new Option('--status <status>', 'only campaigns in this status').choices(STATUSES))
    .addOption(jsonOption())
    .action(async (o: { user?: number; status?: string; json?: boolean }) => {
      await withEngine(async (engine) => {
        const list = (await engine.campaigns.list(o.user ? { userId: o.user } : {}))
          .filter((c) => !o.status || c.status === o.status)
          .sort((a, b) => b.id - a.id);
        const rows = await Promise.all(
          list.map(async (c) => ({ ...c, progress: await engine.campaigns.progress(c.id, { forecast: Boolean(o.json) }) })),
        );
        if (o.json) return json(rows);
        out(
          table(
            ['id', 'user', 'name', 'status', 'sent', 'failed', 'queued', 'total', 'scheduled at'],
            rows.map((c) => [
              c.id,
              c.userId,
              c.name,
              c.status,
              c.progress.sent,
              c.progress.failed,
              c.progress.queued,
              c.progress.total,
              when(c.scheduledAt),
            ]),
          ),
        );
      });
    });
  campaign
    .command('show')
    .description('one campaign: sender, templates, recipients, schedule, send window and progress')
    .argument('<id>', 'campaign id', intArg('id', 1))
    .addOption(jsonOption())
    .action(async (id: number, o: { json?: boolean }) => {
      await withEngine(async (engine) => {
        const c = await engine.campaigns.get(id);
        const p = await engine.campaigns.progress(id);
        if (o.json) return json({ ...c, progress: p });
        const from = c.from.name ? `${c.from.name} <${c.from.address}>` : c.from.address;
        out(
          [
            `campaign #${c.id} ${c.name}`,
            `  status:       ${c.status}${p.waitReason ? ` (waiting: ${p.waitReason})` : ''}`,
            `  user:         #${c.userId}`,
            `  from:         ${from}`,
            `  templates:    ${c.templates.map((t) => `#${t}`).join(', ')}`,
            `  recipients:   ${c.recipients}${c.recipientRule ? ` (rule: ${JSON.stringify(c.recipientRule)})` : ''}`,
            `  scheduled at: ${when(c.scheduledAt)} (${c.timezone})`,
            `  send window:  ${c.sendWindow ? JSON.stringify(c.sendWindow) : 'any time'}`,
            `  priority:     ${c.priority}`,
            `  progress:     ${p.sent} sent, ${p.failed} failed, ${p.cancelled} cancelled, ${p.unknown} unknown, ${p.queued} queued, ${p.sending} sending, of ${p.total}`,
            ...(forecastText(p) ? [`  forecast:     ${forecastText(p)}`] : []),
          ].join('\n') + '\n',
        );
      });
    });
  for (const [verb, desc] of [
    ['pause', 'stop sending (within a scheduler tick); queued mail stays queued'],
    ['resume', 'send a paused campaign again from where it stopped'],
    ['cancel', "cancel every queued message and refund the user's credit for what was not sent"],
  ] as const) {
    campaign
      .command(verb)
      .description(desc)
      .argument('<id>', 'campaign id', intArg('id', 1))
      .action(async (id: number) => {
        await withEngine(async (engine) => {
          if (verb === 'cancel') {
            const { refunded } = await engine.campaigns.cancel(id);
            out(`campaign #${id}: cancelled, ${refunded} credit refunded\n`);
          } else {
            await engine.campaigns[verb](id);
            out(`campaign #${id}: ${(await engine.campaigns.get(id)).status}\n`);
          }
        });
      });
  }
  const statusList = (v: string) =>
    v
      .split(',')
      .map((x) => x.trim())
      .filter(Boolean);
  campaign
    .command('recipients')
    .description('recipients of a campaign with their status and the server’s last reply, a page at a time (--all: every page)')
    .argument('<id>', 'campaign id', intArg('id', 1))
    .option('--status <list>', 'only these statuses, comma-separated (queued, sending, sent, failed, cancelled, unknown)')
    .addOption(new Option('--limit <n>', 'recipients per page').argParser(intArg('limit', 1, 1000)).default(100))
    .option('--cursor <cursor>', 'start after this cursor (the "next" of a previous page)')
    .option('--all', 'every page, not just one')
    .addOption(jsonOption())
    .action(async (id: number, o: { status?: string; limit: number; cursor?: string; all?: boolean; json?: boolean }) => {
      await withEngine(async (engine) => {
        const status = o.status ? statusList(o.status) : [];
        const items: Recipient[] = [];
        let cursor = o.cursor;
        let next: string | null;
        do {
          const page = await engine.campaigns.recipients(id, {
            limit: o.limit,
            ...(status.length ? { status: status as Recipient['status'][] } : {}),
            ...(cursor ? { cursor } : {}),
          });
          items.push(...page.items);
          next = page.nextCursor;
          cursor = next ?? undefined;
        } while (o.all && next);
        if (o.json) return json({ recipients: items, nextCursor: next });
        out(
          table(
            ['contact', 'email', 'status', 'attempts', 'last reply', 'at'],
            items.map((r) => [
              r.contactId,
              r.email,
              r.status,
              r.attempts,
              r.lastReply
                ? `${r.lastReply.result}${r.lastReply.text ? `: ${r.lastReply.text.slice(0, 80)}` : ''}`
                : (r.lastError?.slice(0, 80) ?? '-'),
              when(r.lastReply?.at ?? r.sentAt),
            ]),
          ),
        );
        if (next) out(`more: fairsend campaign recipients ${id} --cursor ${next}${o.status ? ` --status ${o.status}` : ''}\n`);
      });
    });
  campaign
    .command('retry')
    .description("re-queue a campaign's failed and unknown messages (needs the user's credit again; suppressed addresses are left out)")
    .argument('<id>', 'campaign id', intArg('id', 1))
    .option('--status <list>', 'which to retry, comma-separated: failed, unknown', 'failed,unknown')
    .addOption(jsonOption())
    .action(async (id: number, o: { status: string; json?: boolean }) => {
      await withEngine(async (engine) => {
        const r = await engine.campaigns.retry(id, { statuses: statusList(o.status) as ('failed' | 'unknown')[] });
        if (o.json) return json(r);
        out(
          `campaign #${id}: ${r.status}, ${r.requeued} re-queued (${r.failed} failed, ${r.unknown} unknown), ` +
            `${r.skippedSuppressed} suppressed and ${r.skippedInactive} inactive left out, ${r.remainingCredit} credit left\n`,
        );
      });
    });
  campaign
    .command('status')
    .description('progress of a campaign; --watch shows a live bar until it completes or is cancelled')
    .argument('<id>', 'campaign id', intArg('id', 1))
    .option('-w, --watch', 'follow the progress live')
    .addOption(new Option('--interval <ms>', 'refresh interval of --watch').argParser(intArg('interval', 100, 60_000)).default(1000))
    .action(async (id: number, o: { watch?: boolean; interval: number }) => {
      await withEngine(async (engine) => {
        const line = (p: CampaignProgress) =>
          `campaign #${p.id}: ${p.status}, ${p.sent} sent, ${p.failed} failed, ${p.cancelled} cancelled, ${p.unknown} unknown, ` +
          `${p.queued} queued, ${p.sending} sending, of ${p.total}${p.waitReason ? ` (waiting: ${p.waitReason})` : ''}${p.pauseReason ? ` (paused: ${p.pauseReason})` : ''}` +
          `${forecastText(p) ? `, ${forecastText(p)}` : ''}\n`;
        const done = (p: CampaignProgress) => p.sent + p.failed + p.cancelled + p.unknown;
        let p = await engine.campaigns.progress(id);
        if (!o.watch || FINAL.has(p.status)) return out(line(p));
        const stop = stopSignal(io);
        const bar = new cliProgress.SingleBar(
          {
            stream: io.stdout,
            format:
              ' {bar} {percentage}% | {value}/{total} done | {sent} sent, {failed} failed, {cancelled} cancelled | {rate}, ETA {left} | {state}',
            hideCursor: true,
            noTTYOutput: true,
            notTTYSchedule: o.interval,
          },
          cliProgress.Presets.shades_classic,
        );
        // Rate: messages finished (sent, failed, unknown) a minute over the last minute; ETA: the queue at that rate.
        const meter = createRateMeter();
        const payload = (x: CampaignProgress) => {
          const est = meter.add(Date.now(), x.sent + x.failed + x.unknown, x.queued + x.sending);
          return {
            sent: x.sent,
            failed: x.failed,
            cancelled: x.cancelled,
            state: x.status,
            rate: formatRate(est.perMinute),
            left: formatEta(est.etaMs) /* `eta` is cli-progress's own token */,
          };
        };
        bar.start(Math.max(p.total, 1), done(p), payload(p));
        try {
          while (!FINAL.has(p.status) && !(await wait(o.interval, stop.signal))) {
            p = await engine.campaigns.progress(id);
            bar.setTotal(Math.max(p.total, 1));
            bar.update(done(p), payload(p));
          }
        } finally {
          bar.stop();
          stop.dispose();
        }
        out(line(p));
      });
    });
}

/** The completion forecast in words: "expected done 2026-11-30T10:05:00Z", or why there is none. */
function forecastText(p: CampaignProgress): string {
  const f = p.forecast;
  if (!f) return '';
  if (f.completesAt) return `expected done ${when(f.completesAt)}`;
  return f.reason === 'paused' ? '' : `no completion forecast (${f.reason?.replace('_', ' ') ?? 'unknown'})`;
}
