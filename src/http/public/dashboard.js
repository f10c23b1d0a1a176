/* global document, window, localStorage, fetch, clearTimeout, URLSearchParams */
/**
 * fairsend dashboard: plain JS, no framework, no build. It polls the API every POLL_MS with the token
 * kept in localStorage and updates the page in place (rows are keyed by id, so buttons stay put
 * under the pointer): one quota bar per sending service with its sends under way and, per mailbox
 * provider, its throttle (state, rate against configured, last deferral, warm-up), the send rate of
 * each service over the last 15 minutes (from the status API's rate_history, so it is there from
 * the first poll and a pause shows as a drop to zero) as inline SVG lines, one progress bar per
 * campaign with its owner, creation time, pause, resume and cancel, a campaign's recipients (failed
 * and unknown first) with the server's last reply and a retry button, and for admins the latest
 * failures (error_logs) and the maintenance jobs.
 *
 * Every text from the server goes through textContent, never innerHTML: campaign and service
 * names are user input.
 */
const POLL_MS = 1500;
const TOKEN_KEY = 'fairsend.token';
const SVG_NS = 'http://www.w3.org/2000/svg';
/** One colour per service line, in the order of the services. */
const COLOURS = ['#0969da', '#cf6a00', '#2da44e', '#8250df', '#bf3989', '#1b7c83', '#9a6700', '#57606a'];

const $ = (id) => document.getElementById(id);
let timer;
let busy = false;
/** The signed-in user (from /api/me), and for admins the names of every user, by id. */
let me;
const userNames = new Map();

/** The TLS mode of a service, as the CLI names it. */
const TLS_LABEL = { implicit: 'implicit TLS', 'starttls-required': 'STARTTLS required', opportunistic: 'opportunistic' };

function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(props)) {
    if (k === 'dataset') Object.assign(node.dataset, v);
    else if (k === 'class') node.className = v;
    else node[k] = v;
  }
  node.append(...children);
  return node;
}

function token() {
  return localStorage.getItem(TOKEN_KEY);
}

class ApiError extends Error {
  constructor(status, body) {
    super(body?.error?.message ?? `HTTP ${status}`);
    this.status = status;
  }
}

async function api(path, method = 'GET', payload = undefined) {
  const headers = { authorization: `Bearer ${token()}`, accept: 'application/json' };
  if (payload !== undefined) headers['content-type'] = 'application/json';
  const res = await fetch(path, { method, headers, ...(payload !== undefined ? { body: JSON.stringify(payload) } : {}) });
  const body = res.headers.get('content-type')?.includes('json') ? await res.json() : undefined;
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

function fmtNumber(n) {
  return new Intl.NumberFormat().format(n);
}

const dateTime = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'short' });

function fmtAgo(date) {
  const ms = Date.now() - new Date(date).getTime();
  return ms < 60000 ? 'just now' : `${fmtDuration(ms)} ago`;
}

function fmtDuration(ms) {
  if (ms <= 0) return 'now';
  const m = Math.round(ms / 60000);
  if (m < 60) return `${m} min`;
  const h = Math.floor(m / 60);
  return h < 48 ? `${h} h ${m % 60} min` : `${Math.floor(h / 24)} d ${h % 24} h`;
}

/** Finds or creates the row of `id` in `container`, built by `make`, and returns it. */
function keyedRow(container, id, make) {
  let row = container.querySelector(`:scope > [data-id="${id}"]`);
  if (!row) {
    row = make();
    row.dataset.id = String(id);
    container.append(row);
  }
  return row;
}

function dropRowsExcept(container, ids) {
  for (const row of [...container.children]) if (!ids.has(row.dataset.id)) row.remove();
}

function renderServices(services) {
  const box = $('services');
  const now = Date.now();
  for (const s of services) {
    const row = keyedRow(box, s.id, () =>
      el(
        'div',
        { class: 'row service' },
        el('span', { class: 'name' }),
        el('div', { class: 'bar', title: 'used (orange) and left (green) of today’s quota' }, el('span')),
        el('span', { class: 'badge' }),
        el('span', { class: 'detail' }),
        el('ul', { class: 'providers' }),
      ),
    );
    row.querySelector('.name').textContent = s.name;
    // A shared service shows a plain user only what is left of its quota (issue 17).
    const known = s.daily_quota !== undefined && s.used_quota !== undefined;
    const usage = s.usage_percentage ?? (known && s.daily_quota > 0 ? (100 * s.used_quota) / s.daily_quota : 0);
    row.querySelector('.bar > span').style.width = `${Math.min(100, usage)}%`;
    const badge = row.querySelector('.badge');
    badge.textContent = s.is_healthy ? s.state : 'unhealthy';
    badge.className = `badge ${s.is_healthy ? s.state : 'unhealthy'}`;
    row.querySelector('.detail').textContent =
      (known
        ? `${fmtNumber(s.used_quota)} used, ${fmtNumber(s.remaining_quota)} left of ${fmtNumber(s.daily_quota)}`
        : `${fmtNumber(s.remaining_quota)} left today (shared service)`) +
      ` · resets in ${fmtDuration(new Date(s.resets_at).getTime() - now)}` +
      (s.sending_rate > 0 ? ` · one send every ${fmtNumber(s.sending_rate)} s` : ' · no wait between sends') +
      (s.concurrency ? ` · ${s.concurrency.current} of ${s.concurrency.max} concurrent` : '') +
      (s.in_flight !== undefined ? ` · ${fmtNumber(s.in_flight)} sending now` : '') +
      (s.tls_mode
        ? ` · ${TLS_LABEL[s.tls_mode] ?? s.tls_mode}${s.certificate_checking === false ? ', certificates NOT CHECKED' : ''}`
        : '');
    renderProviders(row.querySelector('.providers'), s.deliverability);
  }
  dropRowsExcept(box, new Set(services.map((s) => String(s.id))));
}

const timeOfDay = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });

/** A rate in msg/s as people read it: "2.5/s", "12/min" below one a second, "1/h" below one a minute. */
function fmtRate(perSecond) {
  const round = (n) => fmtNumber(Math.round(n * 10) / 10);
  if (perSecond >= 1) return `${round(perSecond)}/s`;
  if (perSecond * 60 >= 1) return `${round(perSecond * 60)}/min`;
  return `${round(perSecond * 3600)}/h`;
}

/** Why a pair waits (its status `blocked`), when it is not its pace or a suspension (shown already). */
const HELD = {
  hourly: 'hourly cap reached',
  daily: 'daily cap reached',
  warmup: 'warm-up cap reached',
  concurrency: 'at its concurrency limit',
};

/** "suspended until 14:05" (with the date when it is not today), "slowed", "normal". */
function fmtState(p) {
  if (p.state !== 'suspended' || !p.suspended_until) return p.state;
  const until = new Date(p.suspended_until);
  const sameDay = until.toDateString() === new Date().toDateString();
  return `suspended until ${sameDay ? timeOfDay.format(until) : dateTime.format(until)}`;
}

/**
 * One line per mailbox provider of a service (status.services[].deliverability), then its warm-up
 * schedules. Lines are keyed and updated in place, like the rows.
 */
function renderProviders(list, d) {
  const ids = new Set();
  for (const p of d?.providers ?? []) {
    const id = `provider:${p.provider}`;
    ids.add(id);
    const li = keyedRow(list, id, () =>
      el(
        'li',
        {},
        el('span', { class: 'provider-name' }),
        ' ',
        el('span', { class: 'state' }),
        ' ',
        el('span', { class: 'figures' }),
        el('span', { class: 'reply' }),
      ),
    );
    li.dataset.provider = p.provider;
    li.dataset.state = p.state;
    const rate =
      p.rate !== null
        ? `${fmtRate(p.rate)}${p.configured_rate !== null ? ` of ${fmtRate(p.configured_rate)}` : ' (no rate set)'}`
        : p.configured_rate !== null
          ? `full rate (${fmtRate(p.configured_rate)})`
          : 'full rate';
    const parts = [
      rate,
      `${fmtNumber(p.deferrals)} deferred`,
      ...(p.sent_today !== undefined ? [`${fmtNumber(p.sent_today)} sent today`] : []),
      ...(p.warmup ? [`warm-up day ${p.warmup.day}, cap ${p.warmup.cap === null ? 'none (ramp over)' : fmtNumber(p.warmup.cap)}`] : []),
      ...(HELD[p.blocked] ? [HELD[p.blocked]] : []),
    ];
    li.querySelector('.provider-name').textContent = p.provider;
    const state = li.querySelector('.state');
    state.textContent = fmtState(p);
    state.className = `state ${p.state}`;
    li.querySelector('.figures').textContent = parts.join(' · ');
    const last = p.last_deferral;
    const reply = li.querySelector('.reply');
    reply.hidden = !last;
    reply.textContent = last ? `last deferral ${fmtAgo(last.at)}: ${last.reply ?? last.rule}` : '';
    reply.title = last ? `${last.rule} at ${new Date(last.at).toISOString()}${last.reply ? `: ${last.reply}` : ''}` : '';
  }
  for (const w of d?.warmup ?? []) {
    const id = `warmup:${w.provider ?? '*'}`;
    ids.add(id);
    const li = keyedRow(list, id, () => el('li', { class: 'warmup' }));
    li.dataset.warmup = w.provider ?? '*';
    li.textContent =
      `Warm-up (${w.provider ?? 'all providers'}): day ${w.day}, cap ${w.cap === null ? 'none (ramp over)' : fmtNumber(w.cap)}` +
      (w.sent_today !== undefined ? `, ${fmtNumber(w.sent_today)} sent today` : '');
  }
  dropRowsExcept(list, ids);
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function renderRate(status) {
  // A plain user's status has no process-wide figures (issue 17's isolation): no chart for them.
  $('rate-section').hidden = !status.rate_history;
  if (!status.rate_history) return;
  const chart = $('rate-chart');
  // Stretched to the chart's box (preserveAspectRatio none, strokes that do not scale): the
  // labels are HTML around it, so they keep their size at any width.
  const W = 600;
  const H = 160;
  const pad = { l: 0, r: 0, t: 8, b: 2 };
  const perMinute = 60 / status.rate_history.bucket_seconds;
  const lines = status.services.map((s, i) => ({
    service: s,
    colour: COLOURS[i % COLOURS.length],
    values: s.sent_per_bucket.map((n) => n * perMinute),
  }));
  const n = Math.max(2, ...lines.map((l) => l.values.length));
  const max = Math.max(1, ...lines.flatMap((l) => l.values));
  const x = (i) => pad.l + (i / (n - 1)) * (W - pad.l - pad.r);
  const y = (v) => H - pad.b - (v / max) * (H - pad.t - pad.b);
  $('rate-max').textContent = `${fmtNumber(Math.round(max))} a minute`;
  chart.replaceChildren(
    svg('line', { x1: pad.l, y1: y(0), x2: W - pad.r, y2: y(0) }),
    svg('line', { x1: pad.l, y1: y(max), x2: W - pad.r, y2: y(max) }),
    ...lines.map((l) =>
      svg('polyline', {
        points: l.values.map((v, i) => `${x(i)},${y(v)}`).join(' '),
        stroke: l.colour,
        'data-service': l.service.name,
      }),
    ),
  );
  const legend = $('rate-legend');
  legend.replaceChildren(
    ...lines.map((l) => {
      const sent = l.service.sent_per_bucket.reduce((a, b) => a + b, 0);
      const swatch = el('span', { class: 'swatch' });
      swatch.style.background = l.colour;
      return el('li', { dataset: { service: l.service.name } }, swatch, `${l.service.name}: ${fmtNumber(sent)} sent in 15 min`);
    }),
  );
  const rate = status.processing_rate;
  $('rate-now').textContent =
    `${fmtNumber(Math.round(rate.per_minute_1))} a minute over the last minute, ` +
    `${fmtNumber(Math.round(rate.per_minute_5))} over 5, ${fmtNumber(Math.round(rate.per_minute_15))} over 15`;
}

const ACTIONS = {
  pause: ['scheduled', 'sending'],
  resume: ['paused'],
  cancel: ['scheduled', 'sending', 'paused'],
};

async function act(id, verb, name) {
  if (verb === 'cancel' && !window.confirm(`Cancel “${name}”? Queued mail is dropped and its credit refunded.`)) return;
  try {
    await api(`/api/campaigns/${id}/${verb}`, 'POST');
    $('error').textContent = '';
  } catch (err) {
    $('error').textContent = `Could not ${verb} “${name}”: ${err.message}`;
  }
  poll(true);
}

function renderCampaigns(campaigns) {
  const box = $('campaigns');
  for (const c of campaigns) {
    const row = keyedRow(box, c.id, () => {
      const buttons = Object.keys(ACTIONS).map((verb) =>
        el('button', {
          type: 'button',
          class: verb === 'cancel' ? 'danger' : '',
          textContent: verb[0].toUpperCase() + verb.slice(1),
          dataset: { action: verb },
        }),
      );
      buttons.push(el('button', { type: 'button', textContent: 'Recipients', dataset: { open: 'recipients' } }));
      const row = el(
        'div',
        { class: 'row campaign' },
        el('span', { class: 'name' }),
        el('div', { class: 'bar progress', title: 'done: sent, failed or cancelled' }, el('span')),
        el('div', { class: 'actions' }, el('span', { class: 'badge state' }), ...buttons),
        el('span', { class: 'meta' }),
        el('span', { class: 'detail' }),
      );
      row.addEventListener('click', (ev) => {
        const verb = ev.target?.dataset?.action;
        if (verb) act(row.dataset.id, verb, row.querySelector('.name').textContent);
        if (ev.target?.dataset?.open === 'recipients') openRecipients(row.dataset.id, row.querySelector('.name').textContent);
      });
      return row;
    });
    const p = c.progress;
    row.querySelector('.name').textContent = c.name;
    row.querySelector('.name').title = c.name;
    const owner = userNames.get(c.user_id) ?? `user #${c.user_id}`;
    const meta = row.querySelector('.meta');
    meta.textContent = `${owner} · created ${dateTime.format(new Date(c.created_at))}`;
    meta.title = `owner: ${owner} (user #${c.user_id}), created ${new Date(c.created_at).toISOString()}`;
    row.querySelector('.bar > span').style.width = `${p.percent}%`;
    const badge = row.querySelector('.state');
    badge.textContent = c.status;
    badge.className = `badge state ${c.status}`;
    row.dataset.status = c.status;
    badge.title = p.pause_reason ? `paused: ${p.pause_reason}` : '';
    if (c.status === 'paused') row.dataset.pauseCause = pauseCause(p.pause_reason);
    else delete row.dataset.pauseCause;
    for (const b of row.querySelectorAll('button[data-action]')) b.disabled = !ACTIONS[b.dataset.action].includes(c.status);
    row.querySelector('.detail').textContent =
      `${p.percent}% · ${fmtNumber(p.sent)} sent, ${fmtNumber(p.failed)} failed, ${fmtNumber(p.cancelled)} cancelled, ` +
      `${fmtNumber(p.sending)} claimed, ${fmtNumber(p.queued)} queued of ${fmtNumber(p.total)}` +
      fmtForecast(p.forecast) +
      (p.wait_reason ? ` · waiting: ${p.wait_reason}` : '') +
      (c.status === 'paused' && p.pause_reason ? ` · paused: ${p.pause_reason}` : '');
  }
  dropRowsExcept(box, new Set(campaigns.map((c) => String(c.id))));
  $('no-campaigns').hidden = campaigns.length > 0;
}

/** The completion forecast of a campaign row (an estimate from the rates, caps, windows and warm-up in force). */
function fmtForecast(f) {
  if (!f || f.reason === 'paused') return '';
  if (!f.completes_at) return ` · no completion forecast (${f.reason === 'no_service' ? 'no usable service' : f.reason.replace('_', ' ')})`;
  const at = new Date(f.completes_at);
  const sameDay = at.toDateString() === new Date().toDateString();
  return ` · expected done ${sameDay ? timeOfDay.format(at) : dateTime.format(at)} (in ${fmtDuration(at.getTime() - Date.now())})`;
}

/** The recipients view: one campaign at a time, a page of 50, "More" for the next (keyset cursor). */
const recipientsView = { id: null, name: '', cursor: null };

function openRecipients(id, name) {
  recipientsView.id = id;
  recipientsView.name = name;
  $('recipients-name').textContent = `“${name}”`;
  $('recipients-result').textContent = '';
  $('recipients-section').hidden = false;
  loadRecipients(true);
  $('recipients-section').scrollIntoView?.({ block: 'nearest' });
}

async function loadRecipients(fresh) {
  const { id } = recipientsView;
  if (id === null) return;
  if (fresh) {
    recipientsView.cursor = null;
    $('recipients').replaceChildren();
  }
  const status = $('recipients-status').value;
  const query = new URLSearchParams({ limit: '50' });
  if (status) query.set('status', status);
  if (recipientsView.cursor) query.set('cursor', recipientsView.cursor);
  try {
    const page = await api(`/api/campaigns/${id}/recipients?${query}`);
    if (recipientsView.id !== id) return;
    $('recipients').append(
      ...page.recipients.map((r) => {
        const reply = r.last_reply;
        const said = reply
          ? `${reply.result}${reply.text ? `: ${reply.text}` : reply.code ? ` ${reply.code}` : ''}`
          : (r.last_error ?? 'no attempt yet');
        const at = reply?.at ?? r.sent_at;
        return el(
          'div',
          { class: 'entry recipient', dataset: { contact: String(r.contact_id), status: r.status } },
          el(
            'span',
            { class: 'what' },
            `${r.email} · ${r.status}${r.attempts ? ` · ${r.attempts} attempt${r.attempts === 1 ? '' : 's'}` : ''}`,
          ),
          el('span', { class: 'when muted', title: at ? new Date(at).toISOString() : '' }, at ? fmtAgo(at) : ''),
          el('span', { class: 'message' }, said),
        );
      }),
    );
    recipientsView.cursor = page.next_cursor;
    $('recipients-more').hidden = !page.next_cursor;
    $('no-recipients').hidden = $('recipients').childElementCount > 0;
  } catch (err) {
    $('recipients-result').textContent = `Could not load the recipients: ${err.message}`;
  }
}

async function retryRecipients() {
  const { id, name } = recipientsView;
  if (id === null) return;
  if (!window.confirm(`Retry the failed and unknown messages of “${name}”? Each one re-queued uses one credit again.`)) return;
  try {
    const r = await api(`/api/campaigns/${id}/retry`, 'POST', { statuses: ['failed', 'unknown'] });
    $('recipients-result').textContent =
      `${fmtNumber(r.requeued)} re-queued (${fmtNumber(r.failed)} failed, ${fmtNumber(r.unknown)} unknown)` +
      (r.skipped_suppressed ? `, ${fmtNumber(r.skipped_suppressed)} suppressed left out` : '') +
      (r.skipped_inactive ? `, ${fmtNumber(r.skipped_inactive)} inactive left out` : '') +
      ` · ${fmtNumber(r.remaining_credit)} credit left`;
  } catch (err) {
    $('recipients-result').textContent = `Could not retry: ${err.message}`;
  }
  loadRecipients(true);
  poll(true);
}

$('recipients-status').addEventListener('change', () => loadRecipients(true));
$('recipients-more').addEventListener('click', () => loadRecipients(false));
$('recipients-retry').addEventListener('click', () => retryRecipients());
$('recipients-close').addEventListener('click', () => {
  recipientsView.id = null;
  $('recipients-section').hidden = true;
});

/** Why a campaign is paused, as the status API's `cause` (services/breakers.ts pauseCause). */
function pauseCause(reason) {
  if (!reason) return 'manual';
  if (reason.startsWith('complaint breaker: ')) return 'complaint_breaker';
  if (reason.startsWith('hard-bounce breaker: ')) return 'hard_bounce_breaker';
  if (reason.startsWith('user paused: ')) return 'user_pause';
  return 'manual';
}

/** Campaigns a safety breaker or a user pause stopped, and paused users (the status API), above the campaigns. */
function renderPaused(status) {
  const items = [
    ...(status.paused_users ?? []).map((u) => `User ${u.name} is paused across campaigns: ${u.reason}`),
    ...(status.account_pause ? [`Your account is paused across campaigns: ${status.account_pause}`] : []),
    ...(status.paused_campaigns ?? [])
      .filter((c) => c.cause === 'complaint_breaker' || c.cause === 'hard_bounce_breaker')
      .map((c) => `“${c.name}” paused itself: ${c.reason}. Resume it to re-arm the breaker.`),
  ];
  const box = $('paused-notice');
  box.replaceChildren(...items.map((t) => el('li', { textContent: t })));
  box.hidden = items.length === 0;
}

/** The latest failures, newest first (admins). */
function renderFailures(failures) {
  $('failures').replaceChildren(
    ...failures.map((f) =>
      el(
        'div',
        { class: 'entry failure', dataset: { id: String(f.id) } },
        el('span', { class: 'what' }, `${f.error_type}${f.service_name ? ` · ${f.service_name}` : ''} · ×${fmtNumber(f.count)}`),
        el('span', { class: 'when muted', title: new Date(f.last_seen_at).toISOString() }, fmtAgo(f.last_seen_at)),
        el('span', { class: 'message' }, f.message),
      ),
    ),
  );
  $('no-failures').hidden = failures.length > 0;
}

/** The maintenance jobs: schedule, state, last and next run (admins). */
function renderJobs(jobs) {
  $('jobs').replaceChildren(
    ...jobs.map((j) => {
      const state = !j.enabled ? 'disabled' : j.running ? 'running' : j.paused ? 'paused' : 'scheduled';
      const last = j.last_run_at
        ? `last run ${fmtAgo(j.last_run_at)}: ${j.last_outcome ?? 'unknown'}` +
          (j.last_duration_ms !== null ? ` in ${fmtNumber(j.last_duration_ms)} ms` : '')
        : 'not run yet';
      const next = j.next_run_at ? ` · next in ${fmtDuration(new Date(j.next_run_at).getTime() - Date.now())}` : '';
      return el(
        'div',
        { class: 'entry job', dataset: { name: j.name } },
        el('span', { class: 'what' }, j.name),
        el('span', { class: `badge ${state === 'scheduled' ? 'running' : state}` }, state),
        el(
          'span',
          { class: 'message muted', title: j.description },
          `${j.schedule} · ${last}${next}` + (j.last_error ? ` · ${j.last_error}` : ''),
        ),
      );
    }),
  );
}

/** Names of the campaigns' owners: yourself, or for an admin every user (fetched when one is new). */
async function ensureOwners(campaigns) {
  if (!me) return;
  userNames.set(me.id, me.name);
  if (me.role !== 'admin' || campaigns.every((c) => userNames.has(c.user_id))) return;
  const { users } = await api('/api/users');
  for (const u of users) userNames.set(u.id, u.name);
}

/** Admin sections: their own requests, so a missing jobs API (404) hides only the jobs. */
async function pollAdmin() {
  if (me?.role !== 'admin') return;
  const [failures, jobs] = await Promise.allSettled([api('/api/failures?limit=8'), api('/api/jobs')]);
  $('failures-section').hidden = failures.status !== 'fulfilled';
  if (failures.status === 'fulfilled') renderFailures(failures.value.failures);
  $('jobs-section').hidden = jobs.status !== 'fulfilled';
  if (jobs.status === 'fulfilled') renderJobs(jobs.value.jobs);
}

function showLogin(message = '') {
  clearTimeout(timer);
  $('login').hidden = false;
  $('main').hidden = true;
  $('forget').hidden = true;
  $('who').textContent = '';
  $('login-error').textContent = message;
}

async function poll(now = false) {
  clearTimeout(timer);
  if (busy && !now) return;
  busy = true;
  try {
    const [status, list] = await Promise.all([api('/api/scheduler/status'), api('/api/campaigns?limit=200'), pollAdmin()]);
    await ensureOwners(list.campaigns);
    renderServices(status.services);
    renderRate(status);
    renderCampaigns(list.campaigns);
    renderPaused(status);
    const state = $('scheduler');
    state.textContent = status.is_running ? 'scheduler running' : 'scheduler stopped';
    state.className = `badge ${status.is_running ? 'running' : 'paused'}`;
    // Engines and sends under way are process-wide: an admin's view only.
    const engines = status.instances?.length;
    const sendingNow = status.services.reduce((n, s) => n + (s.in_flight ?? 0), 0);
    $('updated').textContent =
      `Updated ${new Date().toLocaleTimeString()}` +
      (engines !== undefined ? ` · ${fmtNumber(sendingNow)} sending now` : '') +
      ` · ${fmtNumber(status.queued_subtasks)} queued` +
      (engines !== undefined ? ` · ${engines} engine${engines === 1 ? '' : 's'} running` : '');
    if (!$('error').textContent.startsWith('Could not')) $('error').textContent = '';
  } catch (err) {
    if (err.status === 401) {
      localStorage.removeItem(TOKEN_KEY);
      showLogin('That token was refused. Enter a valid API token.');
      busy = false;
      return;
    }
    $('error').textContent = `Cannot reach the API: ${err.message}`;
  }
  busy = false;
  timer = setTimeout(poll, POLL_MS);
}

async function start() {
  try {
    me = await api('/api/me');
    $('who').textContent = `${me.name} (${me.role})`;
  } catch (err) {
    if (err.status === 401 || err.status === 403) {
      localStorage.removeItem(TOKEN_KEY);
      return showLogin(
        err.status === 403 ? `That token cannot open the dashboard: ${err.message}.` : 'That token was refused. Enter a valid API token.',
      );
    }
  }
  $('login').hidden = true;
  $('main').hidden = false;
  $('forget').hidden = false;
  poll(true);
}

$('token-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const value = $('token').value.trim();
  if (!value) return;
  localStorage.setItem(TOKEN_KEY, value);
  $('token').value = '';
  start();
});

$('forget').addEventListener('click', () => {
  localStorage.removeItem(TOKEN_KEY);
  showLogin();
});

if (token()) start();
else showLogin();
