/* global document, window, localStorage, fetch, clearTimeout */
/**
 * fairsend dashboard: plain JS, no framework, no build. It polls the API every POLL_MS with the token
 * kept in localStorage and updates the page in place (rows are keyed by id, so buttons stay put
 * under the pointer): one quota bar per sending service, the send rate over time as an inline SVG
 * line, one progress bar per campaign with pause, resume and cancel.
 *
 * Every text from the server goes through textContent, never innerHTML: campaign and service
 * names are user input.
 */
const POLL_MS = 1500;
const TOKEN_KEY = 'fairsend.token';
const RATE_SAMPLES = 120;
const SVG_NS = 'http://www.w3.org/2000/svg';

const $ = (id) => document.getElementById(id);
const rateSamples = [];
let timer;
let busy = false;

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

async function api(path, method = 'GET') {
  const res = await fetch(path, { method, headers: { authorization: `Bearer ${token()}`, accept: 'application/json' } });
  const body = res.headers.get('content-type')?.includes('json') ? await res.json() : undefined;
  if (!res.ok) throw new ApiError(res.status, body);
  return body;
}

function fmtNumber(n) {
  return new Intl.NumberFormat().format(n);
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
      ),
    );
    row.querySelector('.name').textContent = s.name;
    row.querySelector('.bar > span').style.width = `${Math.min(100, s.usage_percentage)}%`;
    const badge = row.querySelector('.badge');
    badge.textContent = s.is_healthy ? s.state : 'unhealthy';
    badge.className = `badge ${s.is_healthy ? s.state : 'unhealthy'}`;
    row.querySelector('.detail').textContent =
      `${fmtNumber(s.used_quota)} used, ${fmtNumber(s.remaining_quota)} left of ${fmtNumber(s.daily_quota)}` +
      ` · resets in ${fmtDuration(new Date(s.resets_at).getTime() - now)}` +
      (s.sending_rate > 0 ? ` · one send every ${fmtNumber(s.sending_rate)} s` : ' · no wait between sends') +
      (s.concurrency ? ` · ${s.concurrency.current} of ${s.concurrency.max} concurrent` : '');
  }
  dropRowsExcept(box, new Set(services.map((s) => String(s.id))));
}

function svg(tag, attrs) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
  return node;
}

function renderRate(rate) {
  rateSamples.push({ t: Date.now(), v: rate.per_minute_1 });
  if (rateSamples.length > RATE_SAMPLES) rateSamples.shift();
  const chart = $('rate-chart');
  const W = 600;
  const H = 160;
  const pad = { l: 40, r: 8, t: 10, b: 18 };
  const max = Math.max(1, ...rateSamples.map((s) => s.v));
  const x = (i) => pad.l + (i / (RATE_SAMPLES - 1)) * (W - pad.l - pad.r);
  const y = (v) => H - pad.b - (v / max) * (H - pad.t - pad.b);
  chart.replaceChildren(
    svg('line', { x1: pad.l, y1: y(0), x2: W - pad.r, y2: y(0) }),
    svg('line', { x1: pad.l, y1: y(max), x2: W - pad.r, y2: y(max) }),
    Object.assign(svg('text', { x: 4, y: y(max) + 4 }), { textContent: fmtNumber(Math.round(max)) }),
    Object.assign(svg('text', { x: 4, y: y(0) + 4 }), { textContent: '0' }),
    Object.assign(svg('text', { x: pad.l, y: H - 3 }), { textContent: `last ${Math.round((RATE_SAMPLES * POLL_MS) / 60000)} min` }),
    svg('polyline', { points: rateSamples.map((s, i) => `${x(i + RATE_SAMPLES - rateSamples.length)},${y(s.v)}`).join(' ') }),
  );
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
      const row = el(
        'div',
        { class: 'row campaign' },
        el('span', { class: 'name' }),
        el('div', { class: 'bar progress', title: 'done: sent, failed or cancelled' }, el('span')),
        el('div', { class: 'actions' }, el('span', { class: 'badge state' }), ...buttons),
        el('span', { class: 'detail' }),
      );
      row.addEventListener('click', (ev) => {
        const verb = ev.target?.dataset?.action;
        if (verb) act(row.dataset.id, verb, row.querySelector('.name').textContent);
      });
      return row;
    });
    const p = c.progress;
    row.querySelector('.name').textContent = c.name;
    row.querySelector('.bar > span').style.width = `${p.percent}%`;
    const badge = row.querySelector('.state');
    badge.textContent = c.status;
    badge.className = `badge state ${c.status}`;
    row.dataset.status = c.status;
    for (const b of row.querySelectorAll('button[data-action]')) b.disabled = !ACTIONS[b.dataset.action].includes(c.status);
    row.querySelector('.detail').textContent =
      `${p.percent}% · ${fmtNumber(p.sent)} sent, ${fmtNumber(p.failed)} failed, ${fmtNumber(p.cancelled)} cancelled, ` +
      `${fmtNumber(p.sending)} in flight, ${fmtNumber(p.queued)} queued of ${fmtNumber(p.total)}` +
      (p.wait_reason ? ` · waiting: ${p.wait_reason}` : '');
  }
  dropRowsExcept(box, new Set(campaigns.map((c) => String(c.id))));
  $('no-campaigns').hidden = campaigns.length > 0;
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
    const [status, list] = await Promise.all([api('/api/scheduler/status'), api('/api/campaigns?limit=200')]);
    renderServices(status.services);
    renderRate(status.processing_rate);
    renderCampaigns(list.campaigns);
    const state = $('scheduler');
    state.textContent = status.is_running ? 'scheduler running' : 'scheduler stopped';
    state.className = `badge ${status.is_running ? 'running' : 'paused'}`;
    const engines = status.instances.length;
    $('updated').textContent =
      `Updated ${new Date().toLocaleTimeString()} · ${fmtNumber(status.queued_subtasks)} queued` +
      ` · ${engines} engine${engines === 1 ? '' : 's'} running`;
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
    const me = await api('/api/me');
    $('who').textContent = `${me.name} (${me.role})`;
  } catch (err) {
    if (err.status === 401) {
      localStorage.removeItem(TOKEN_KEY);
      return showLogin('That token was refused. Enter a valid API token.');
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
