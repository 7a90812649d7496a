// Sluice dashboard: a hash-routed single page over the REST API (/api/v1.0) and the flow
// events stream (Server-Sent Events, read with fetch so the bearer token can go in a header).
'use strict';

const API = '/api/v1.0';
const FINAL = new Set(['COMPLETED', 'FAILED', 'CANCELLED']);
const STATES = ['READY', 'RUNNING', 'COMPLETED', 'FAILED', 'CANCELLED'];
const MAX_LOG_LINES = 1000;

const view = document.getElementById('view');
let current = null; // the page's cleanup: { stop() }

// ---- helpers ---------------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === null || v === undefined || v === false) continue;
    if (k === 'class') el.className = v;
    else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS('http://www.w3.org/2000/svg', tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

const badge = (state) => h('span', { class: `badge st-${state}`, 'data-state': state }, state);

function bar(percent, state, big = false) {
  const p = Math.max(0, Math.min(100, Number(percent) || 0));
  const cls = ['bar', big ? 'big' : '', state === 'COMPLETED' ? 'done' : '',
    state === 'FAILED' || state === 'CANCELLED' ? 'bad' : ''].join(' ');
  const fill = h('div', { class: 'fill' });
  fill.style.width = `${p}%`;
  return h('div', { class: cls, role: 'progressbar', 'aria-valuenow': p, 'aria-valuemin': 0,
    'aria-valuemax': 100, 'data-percent': p }, fill, h('span', { class: 'label' }, `${p.toFixed(1)}%`));
}

function when(ts) {
  if (!ts) return '';
  const d = new Date(ts);
  return isNaN(d) ? ts : d.toLocaleString();
}

function duration(from, to) {
  if (!from) return '';
  const ms = (to ? new Date(to) : new Date()) - new Date(from);
  if (!(ms >= 0)) return '';
  if (ms < 1000) return `${ms} ms`;
  const s = ms / 1000;
  if (s < 60) return `${s.toFixed(1)} s`;
  const m = Math.floor(s / 60);
  return m < 60 ? `${m} min ${Math.round(s % 60)} s` : `${Math.floor(m / 60)} h ${m % 60} min`;
}

// ---- API and token ---------------------------------------------------------------------------

const tokenPanel = document.getElementById('token-panel');
const forget = document.getElementById('forget-token');
let tokenWaiters = [];

function token() { return sessionStorage.getItem('sluice.token') || ''; }
function authHeaders() { const t = token(); return t ? { Authorization: `Bearer ${t}` } : {}; }

function askToken(refused) {
  tokenPanel.classList.remove('hidden');
  document.getElementById('token-error').classList.toggle('hidden', !refused);
  document.getElementById('token-input').focus();
  return new Promise((resolve) => tokenWaiters.push(resolve));
}

document.getElementById('token-form').addEventListener('submit', (e) => {
  e.preventDefault();
  const input = document.getElementById('token-input');
  sessionStorage.setItem('sluice.token', input.value.trim());
  input.value = '';
  tokenPanel.classList.add('hidden');
  forget.classList.remove('hidden');
  const waiters = tokenWaiters; tokenWaiters = [];
  waiters.forEach((w) => w());
});
forget.addEventListener('click', () => { sessionStorage.removeItem('sluice.token'); location.reload(); });
if (token()) forget.classList.remove('hidden');

class ApiError extends Error {
  constructor(status, problem) {
    super(problem && (problem.detail || problem.title) || `HTTP ${status}`);
    this.status = status; this.problem = problem;
  }
}

async function api(path, options = {}) {
  for (;;) {
    const res = await fetch(API + path, { ...options, headers: { ...(options.headers || {}), ...authHeaders() } });
    if (res.status === 401) { await askToken(Boolean(token())); continue; }
    const text = await res.text();
    let body = null;
    try { body = text ? JSON.parse(text) : null; } catch { body = text; }
    if (!res.ok) throw new ApiError(res.status, body);
    return body;
  }
}

const post = (path, body) => api(path, { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify(body) });

// Reads a flow's Server-Sent Events, calling onEvent(name, data) for each; reconnects (after a
// pause) when the stream breaks before its `end` event. Returns { stop() }.
function followFlow(id, onEvent) {
  const ctrl = new AbortController();
  let ended = false;
  (async () => {
    let pause = 500;
    while (!ended && !ctrl.signal.aborted) {
      try {
        const res = await fetch(`${API}/flows/${id}/events`, { headers: { ...authHeaders(), Accept: 'text/event-stream' }, signal: ctrl.signal });
        if (res.status === 401) { await askToken(Boolean(token())); continue; }
        if (!res.ok) throw new ApiError(res.status, await res.json().catch(() => null));
        pause = 500;
        const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
        let buf = '';
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buf += value;
          let cut;
          while ((cut = buf.indexOf('\n\n')) >= 0) {
            const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
            let name = 'message'; const data = [];
            for (const line of block.split('\n')) {
              if (line.startsWith(':')) continue;
              if (line.startsWith('event:')) name = line.slice(6).trim();
              else if (line.startsWith('data:')) data.push(line.slice(5).replace(/^ /, ''));
            }
            if (!data.length) continue;
            let payload = null;
            try { payload = JSON.parse(data.join('\n')); } catch { payload = data.join('\n'); }
            if (name === 'end') ended = true;
            onEvent(name, payload);
          }
        }
      } catch (e) {
        if (ctrl.signal.aborted) return;
        if (e instanceof ApiError && e.status === 404) { onEvent('gone', e.message); return; }
      }
      if (!ended && !ctrl.signal.aborted) {
        await new Promise((r) => setTimeout(r, pause));
        pause = Math.min(pause * 2, 5000);
      }
    }
  })();
  return { stop: () => ctrl.abort() };
}

// ---- pages -----------------------------------------------------------------------------------

function showError(e) {
  view.replaceChildren(h('div', { class: 'card error-text', id: 'page-error' }, `Error: ${e.message}`));
}

// Flows list: polled every second, so every flow's state and progress stay live.
function flowsPage(params) {
  const filter = params.get('state') || '';
  const select = h('select', { id: 'state-filter', 'aria-label': 'State filter',
    onchange: (e) => { location.hash = e.target.value ? `#/flows?state=${e.target.value}` : '#/flows'; } },
  h('option', { value: '' }, 'All states'), STATES.map((s) => h('option', { value: s, selected: s === filter }, s)));
  const body = h('tbody');
  const table = h('table', { id: 'flows' }, h('thead', {}, h('tr', {},
    ['Flow', 'Input', 'State', 'Progress', 'Tasks', 'Errors', 'Created', 'Duration'].map((c) => h('th', {}, c)))), body);
  const empty = h('p', { class: 'muted hidden' }, 'No flows yet. Start one from a flow input.');
  view.replaceChildren(h('h1', {}, 'Flows'), h('div', { class: 'toolbar' }, select), h('div', { class: 'card' }, table, empty));
  let timer = null; let stopped = false;
  async function refresh() {
    try {
      const page = await api(`/flows?limit=100${filter ? `&state=${filter}` : ''}`);
      body.replaceChildren(...page.items.map((f) => h('tr', { 'data-flow': f.id },
        h('td', {}, h('a', { href: `#/flows/${f.id}` }, `#${f.id}`)),
        h('td', {}, h('a', { href: `#/inputs/${f.flow_input_id}` }, `input ${f.flow_input_id}`)),
        h('td', {}, badge(f.output.state)),
        h('td', {}, bar(f.output.progress.percent, f.output.state)),
        h('td', { class: 'num' }, f.output.task_count),
        h('td', { class: 'num' }, f.output.error_count),
        h('td', {}, when(f.created_utc)),
        h('td', {}, duration(f.output.started_utc, f.output.finished_utc)))));
      empty.classList.toggle('hidden', page.items.length > 0);
    } catch (e) { if (!stopped) showError(e); return; }
    if (!stopped) timer = setTimeout(refresh, 1000);
  }
  refresh();
  return { stop() { stopped = true; clearTimeout(timer); } };
}

// Lays the DAG out in columns by depth and draws it; returns { svg, paint(tasks) }.
function dagView(dag) {
  const nodes = dag.nodes || [];
  const byName = new Map(nodes.map((n) => [n.name, n]));
  const depth = new Map();
  const depthOf = (name, seen = new Set()) => {
    if (depth.has(name)) return depth.get(name);
    if (seen.has(name)) return 0;
    seen.add(name);
    const n = byName.get(name);
    const d = n && n.depends_on.length ? 1 + Math.max(...n.depends_on.filter((x) => byName.has(x)).map((x) => depthOf(x, seen)), -1) : 0;
    depth.set(name, d);
    return d;
  };
  const columns = [];
  for (const n of nodes) { const d = depthOf(n.name); (columns[d] = columns[d] || []).push(n.name); }
  const W = 180; const H = 34; const GX = 60; const GY = 16; const PAD = 10;
  const pos = new Map();
  columns.forEach((col, x) => col.forEach((name, y) => pos.set(name, { x: PAD + x * (W + GX), y: PAD + y * (H + GY) })));
  const width = PAD * 2 + Math.max(1, columns.length) * (W + GX) - GX;
  const height = PAD * 2 + Math.max(1, ...columns.map((c) => c.length)) * (H + GY) - GY;
  const root = svg('svg', { width, height, viewBox: `0 0 ${width} ${height}`, role: 'img', 'aria-label': 'DAG of the flow' });
  for (const n of nodes) {
    const to = pos.get(n.name);
    for (const dep of n.depends_on) {
      const from = pos.get(dep);
      if (!from) continue;
      const x1 = from.x + W; const y1 = from.y + H / 2; const x2 = to.x; const y2 = to.y + H / 2;
      root.append(svg('path', { class: 'edge', d: `M${x1},${y1} C${x1 + GX / 2},${y1} ${x2 - GX / 2},${y2} ${x2},${y2}` }));
    }
  }
  const colors = { PENDING: '#8c959f', RUNNING: '#1f6feb', COMPLETED: '#1a7f37', FAILED: '#cf222e', SKIPPED: '#bf8700', CANCELLED: '#57606a' };
  const shapes = new Map();
  for (const n of nodes) {
    const p = pos.get(n.name);
    const rect = svg('rect', { x: p.x, y: p.y, width: W, height: H, rx: 6, fill: colors.PENDING });
    const label = n.name.length > 21 ? `${n.name.slice(0, 20)}…` : n.name;
    const g = svg('g', { class: 'node PENDING', 'data-task': n.name, 'data-state': 'PENDING' },
      svg('title', {}, `${n.name} (${n.kind})`), rect,
      svg('text', { x: p.x + 10, y: p.y + H / 2 + 4 }, `${n.kind === 'ingest' ? '⇣' : n.kind === 'persist' ? '⇡' : n.kind === 'check' ? '✓' : 'ƒ'} ${label}`));
    shapes.set(n.name, { g, rect });
    root.append(g);
  }
  return {
    svg: root,
    paint(tasks) {
      for (const t of tasks) {
        const s = shapes.get(t.name);
        if (!s) continue;
        s.g.setAttribute('class', `node ${t.state}`);
        s.g.setAttribute('data-state', t.state);
        s.rect.setAttribute('fill', colors[t.state] || colors.PENDING);
      }
    },
  };
}

function flowPage(id) {
  let flow = null; let dag = null; let follower = null; let ticker = null;
  const title = h('h1', {}, `Flow #${id}`);
  const stateSlot = h('span', { id: 'flow-state' });
  const barSlot = h('div', { id: 'flow-progress' });
  const cancel = h('button', { id: 'cancel', class: 'danger', type: 'button', disabled: true, onclick: onCancel }, 'Cancel');
  const cancelMsg = h('span', { class: 'muted', id: 'cancel-message' });
  const meta = h('dl', { class: 'kv' });
  const dagSlot = h('div', { class: 'dag', id: 'dag' });
  const tasksBody = h('tbody');
  const tasks = h('table', { id: 'tasks' }, h('thead', {}, h('tr', {},
    ['Task', 'Kind', 'State', 'Attempts', 'Rows', 'Started', 'Duration', 'Error'].map((c) => h('th', {}, c)))), tasksBody);
  const errors = h('ul', { class: 'errors', id: 'errors' });
  const noErrors = h('p', { class: 'muted' }, 'No errors.');
  const checksBody = h('tbody');
  const checksCard = h('div', { class: 'card hidden', id: 'checks' }, h('h2', {}, 'Checks'),
    h('table', {}, h('thead', {}, h('tr', {},
      ['Check', 'Node', 'Type', 'Severity', 'State', 'Failing rows', 'Finished', 'Sample'].map((c) => h('th', {}, c)))), checksBody));
  const log = h('div', { class: 'log', id: 'log' });
  title.append(stateSlot, cancel, cancelMsg);
  view.replaceChildren(title,
    h('div', { class: 'card' }, barSlot, h('div', { class: 'muted' }, meta)),
    h('div', { class: 'card' }, h('h2', {}, 'DAG'), dagSlot),
    h('div', { class: 'card' }, h('h2', {}, 'Tasks'), tasks),
    checksCard,
    h('div', { class: 'grid' },
      h('div', { class: 'card' }, h('h2', {}, 'Log'), log),
      h('div', { class: 'card' }, h('h2', {}, 'Errors'), noErrors, errors)));

  async function onCancel() {
    cancel.disabled = true;
    try { await post(`/flows/cancel/${id}`, {}); cancelMsg.textContent = 'cancel sent'; } catch (e) { cancelMsg.textContent = e.message; }
  }

  function renderHead() {
    const o = flow.output;
    stateSlot.replaceChildren(badge(o.state));
    barSlot.replaceChildren(bar(o.progress.percent, o.state, true));
    cancel.disabled = FINAL.has(o.state);
    meta.replaceChildren(
      h('dt', {}, 'Input'), h('dd', {}, h('a', { href: `#/inputs/${flow.flow_input_id}` }, `flow input ${flow.flow_input_id}`)),
      h('dt', {}, 'Created'), h('dd', {}, when(flow.created_utc)),
      h('dt', {}, 'Started'), h('dd', {}, when(o.started_utc)),
      h('dt', {}, 'Finished'), h('dd', {}, when(o.finished_utc)),
      h('dt', {}, 'Duration'), h('dd', {}, duration(o.started_utc, o.finished_utc)),
      o.restarts ? [h('dt', {}, 'Restarts'), h('dd', {}, o.restarts)] : [],
      Object.entries(o.cursors || {}).map(([source, c]) => [
        h('dt', {}, `Cursor ${source}`),
        h('dd', {}, c.files
          ? `${c.files.length.toLocaleString()} new file${c.files.length === 1 ? '' : 's'}: ${c.rows.toLocaleString()} rows`
          : `${c.column} ${cursorRange(c)}: ${c.rows.toLocaleString()} rows`)]));
  }

  // `after → through` of a cursor source (`everything` for a first read or a full refresh).
  function cursorRange(c) {
    const value = (v) => (v === null ? '…' : String(v));
    return c.after === null ? `everything through ${value(c.through)}` : `${value(c.after)} → ${value(c.through)}`;
  }

  function renderTasks() {
    tasksBody.replaceChildren(...flow.output.tasks.map((t) => h('tr', { 'data-task': t.name },
      h('td', {}, t.name), h('td', {}, t.kind), h('td', {}, badge(t.state)),
      h('td', { class: 'num' }, t.attempts), h('td', { class: 'num' }, t.rows === null ? '' : t.rows.toLocaleString()),
      h('td', {}, when(t.started_utc)), h('td', {}, duration(t.started_utc, t.finished_utc)),
      h('td', { class: 'error-text' }, t.error || ''))));
    if (dag) dag.paint(flow.output.tasks);
  }

  // Each check: its state, counts and (when it failed) its message and sample rows.
  function renderChecks() {
    const checks = flow.output.checks || [];
    checksCard.classList.toggle('hidden', checks.length === 0);
    checksBody.replaceChildren(...checks.map((c) => h('tr', { 'data-check': c.name },
      h('td', {}, c.name), h('td', {}, c.node), h('td', {}, c.type), h('td', {}, c.severity),
      h('td', {}, badge(c.state)),
      h('td', { class: 'num' }, c.failing_rows === null || c.failing_rows === undefined ? '' : c.failing_rows.toLocaleString()),
      h('td', {}, when(c.finished_utc)),
      h('td', { class: 'check-detail' }, c.message ? h('div', { class: c.state === 'WARNED' ? 'warn-text' : 'error-text' }, c.message) : '',
        c.sample && c.sample.length ? h('pre', { class: 'sample' }, c.sample.map((r) => JSON.stringify(r)).join('\n')) : ''))));
  }

  function appendLog(line) {
    const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 4;
    const level = (line.split(' ')[1] || '');
    log.append(h('div', { class: level }, line));
    while (log.childElementCount > MAX_LOG_LINES) log.firstElementChild.remove();
    if (atBottom) log.scrollTop = log.scrollHeight;
  }

  function renderAll() {
    renderHead(); renderTasks(); renderChecks();
    log.replaceChildren(); flow.output.logs.lines.forEach(appendLog);
    log.scrollTop = log.scrollHeight;
    errors.replaceChildren(...flow.output.errors.lines.map((l) => h('li', {}, l)));
    noErrors.classList.toggle('hidden', flow.output.errors.lines.length > 0);
  }

  function onEvent(name, data) {
    switch (name) {
      case 'snapshot': flow = data; renderAll(); break;
      case 'state': if (!flow) break;
        Object.assign(flow.output, { state: data.state, updated_utc: data.updated_utc, started_utc: data.started_utc, finished_utc: data.finished_utc });
        flow.output.progress.percent = Math.max(flow.output.progress.percent, data.percent);
        renderHead(); break;
      case 'progress': if (!flow) break;
        flow.output.progress.percent = Math.max(flow.output.progress.percent, data.percent);
        for (const r of data.tasks) { const t = flow.output.tasks.find((x) => x.name === r.name); if (t) t.rows = r.rows; }
        renderHead(); renderTasks(); break;
      case 'task': if (!flow) break;
        { const i = flow.output.tasks.findIndex((x) => x.name === data.name);
          if (i >= 0) flow.output.tasks[i] = data; else flow.output.tasks.push(data); }
        renderTasks(); break;
      case 'check': if (!flow) break;
        { const checks = flow.output.checks || (flow.output.checks = []);
          const i = checks.findIndex((x) => x.name === data.name);
          if (i >= 0) checks[i] = data; else checks.push(data); }
        renderChecks(); break;
      case 'log': appendLog(data.line); break;
      case 'error': errors.append(h('li', {}, data.line)); noErrors.classList.add('hidden'); break;
      case 'gone': showError(new Error(`flow ${id} does not exist`)); break;
      default: break;
    }
  }

  (async () => {
    try {
      const f = await api(`/flows/${id}`);
      const input = await api(`/flow-inputs/${f.flow_input_id}`);
      dag = dagView(input.dag);
      dagSlot.replaceChildren(dag.svg);
      if (!flow) { flow = f; renderAll(); } else renderTasks();
    } catch (e) { showError(e); return; }
    follower = followFlow(id, onEvent);
    // Durations of running tasks tick on their own.
    ticker = setInterval(() => { if (flow && !FINAL.has(flow.output.state)) { renderHead(); renderTasks(); } }, 1000);
  })();
  return { stop() { if (follower) follower.stop(); clearInterval(ticker); } };
}

function storesPage() {
  const body = h('tbody');
  view.replaceChildren(h('h1', {}, 'Data stores'), h('div', { class: 'card' }, h('table', { id: 'stores' },
    h('thead', {}, h('tr', {}, ['Store', 'Name', 'Kind', 'Engine', 'Where', 'Created'].map((c) => h('th', {}, c)))), body)));
  api('/data-stores?limit=500').then((page) => body.replaceChildren(...page.items.map((s) => h('tr', {},
    h('td', {}, h('a', { href: `#/stores/${s.id}` }, `#${s.id}`)), h('td', {}, s.name), h('td', {}, s.kind),
    h('td', {}, s.engine), h('td', {}, where(s.connection)), h('td', {}, when(s.created_utc)))))).catch(showError);
  return null;
}

function where(c) {
  return c.type === 'db' ? `${c.user}@${c.host}:${c.port}/${c.db_name}` : c.path;
}

function storePage(id) {
  api(`/data-stores/${id}`).then((s) => {
    const c = s.connection;
    const rows = c.type === 'db'
      ? [['Host', c.host], ['Port', c.port], ['User', c.user], ['Database', c.db_name], ['Password', c.password_set ? 'set (never shown)' : 'none']]
      : [['Path', c.path]];
    view.replaceChildren(h('h1', {}, `Data store ${s.name}`), h('div', { class: 'card' }, h('dl', { class: 'kv', id: 'store' },
      [['Id', s.id], ['Kind', s.kind], ['Engine', s.engine], ['Connection', c.type], ...rows, ['Created', when(s.created_utc)]]
        .map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)]))));
  }).catch(showError);
  return null;
}

function inputsPage() {
  const body = h('tbody');
  view.replaceChildren(h('h1', {}, 'Flow inputs'), h('div', { class: 'card' }, h('table', { id: 'inputs' },
    h('thead', {}, h('tr', {}, ['Input', 'Name', 'Sources', 'Transforms', 'Outputs', 'Target store', 'Created'].map((c) => h('th', {}, c)))), body)));
  api('/flow-inputs?limit=500').then((page) => body.replaceChildren(...page.items.map((i) => h('tr', { 'data-input': i.id },
    h('td', {}, h('a', { href: `#/inputs/${i.id}` }, `#${i.id}`)), h('td', {}, i.name),
    h('td', { class: 'num' }, i.source_count), h('td', { class: 'num' }, i.transform_count), h('td', { class: 'num' }, i.output_count),
    h('td', {}, h('a', { href: `#/stores/${i.target_store_id}` }, `#${i.target_store_id}`)), h('td', {}, when(i.created_utc)))))).catch(showError);
  return null;
}

function inputPage(id) {
  api(`/flow-inputs/${id}`).then((i) => {
    const start = h('button', { id: 'start-flow', class: 'primary', type: 'button', onclick: async () => {
      start.disabled = true;
      try { const f = await post('/flows', { flow_input_id: i.id }); location.hash = `#/flows/${f.id}`; } catch (e) { start.disabled = false; showError(e); }
    } }, 'Start a flow');
    const dag = dagView(i.dag);
    view.replaceChildren(
      h('h1', {}, `Flow input ${i.name}`, start),
      h('div', { class: 'card' }, h('dl', { class: 'kv' },
        h('dt', {}, 'Id'), h('dd', {}, i.id), h('dt', {}, 'Created'), h('dd', {}, when(i.created_utc)),
        h('dt', {}, 'Target store'), h('dd', {}, h('a', { href: `#/stores/${i.target_store_id}` }, `#${i.target_store_id}`)),
        h('dt', {}, 'Options'), h('dd', {}, Object.entries(i.options).map(([k, v]) => `${k}=${v}`).join(', ')))),
      h('div', { class: 'card' }, h('h2', {}, 'DAG'), h('div', { class: 'dag' }, dag.svg)),
      h('div', { class: 'card' }, h('h2', {}, 'Sources'), h('table', {}, h('thead', {}, h('tr', {}, ['Name', 'Store', 'Reads'].map((c) => h('th', {}, c)))),
        h('tbody', {}, i.sources.map((s) => h('tr', {}, h('td', {}, s.name),
          h('td', {}, h('a', { href: `#/stores/${s.store_id}` }, `#${s.store_id}`)),
          h('td', {}, s.table ? `table ${s.table}` : s.query ? h('pre', {}, s.query) : `path ${s.path || '(the store itself)'}`)))))),
      h('div', { class: 'card', id: 'transforms' }, h('h2', {}, 'Transforms'),
        i.transforms.map((t) => [h('div', {}, h('strong', {}, t.name)), h('pre', { class: 'sql' }, t.sql)])),
      h('div', { class: 'card' }, h('h2', {}, 'Outputs'), h('table', {}, h('thead', {}, h('tr', {}, ['Node', 'Table', 'Mode'].map((c) => h('th', {}, c)))),
        h('tbody', {}, i.outputs.map((o) => h('tr', {}, h('td', {}, o.node), h('td', {}, o.table), h('td', {}, o.mode)))))));
  }).catch(showError);
  return null;
}

// ---- router ----------------------------------------------------------------------------------

function route() {
  if (current) { current.stop(); current = null; }
  const [path, query] = (location.hash.slice(1) || '/flows').split('?');
  const params = new URLSearchParams(query || '');
  const parts = path.split('/').filter(Boolean);
  document.querySelectorAll('[data-nav]').forEach((a) => a.classList.toggle('active', a.dataset.nav === (parts[0] || 'flows')));
  const id = parts[1] && /^\d+$/.test(parts[1]) ? Number(parts[1]) : null;
  switch (parts[0]) {
    case 'stores': current = id ? storePage(id) : storesPage(); break;
    case 'inputs': current = id ? inputPage(id) : inputsPage(); break;
    case 'flows':
    default: current = id ? flowPage(id) : flowsPage(params); break;
  }
}

window.addEventListener('hashchange', route);
route();
