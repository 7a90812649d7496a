// End-to-end test of the dashboard: the real `sluice` binary on a random port (auth on, JSON
// logs, a temporary data directory with example data), driven in Debian's headless Chromium by
// playwright-core. Screenshots go to target/artifacts/browser/.
//
//   SLUICE_BIN (default target/debug/sluice), CHROMIUM (default /usr/bin/chromium)

import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { mkdtempSync, mkdirSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
const BIN = process.env.SLUICE_BIN || join(ROOT, 'target/debug/sluice');
const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';
const ARTIFACTS = join(ROOT, 'target/artifacts/browser');
const TOKEN = 'browser-test-token-7f3a';
const PASSWORD = 'never-shown-pw-91c2';

let server; let base; let browser; let temp;
const logLines = []; // the server's JSON log, parsed

async function startServer() {
  temp = mkdtempSync(join(tmpdir(), 'sluice-browser-'));
  const files = join(temp, 'files');
  mkdirSync(join(files, 'in'), { recursive: true });
  mkdirSync(join(files, 'out'), { recursive: true });
  let csv = 'id,customer,amount,status\n';
  for (let i = 1; i <= 20000; i++) csv += `${i},${i % 97},${(i * 7) % 1000}.5,${i % 3 ? 'PAID' : 'open'}\n`;
  writeFileSync(join(files, 'in', 'orders.csv'), csv);
  const env = { ...process.env };
  delete env.RUST_LOG; // the level below decides
  server = spawn(BIN, ['serve'], {
    env: {
      ...env,
      SLUICE__SERVER__PORT: '0',
      SLUICE__DATA_DIR: join(temp, 'data'),
      SLUICE__FILES__ALLOWED_ROOTS: files,
      SLUICE__AUTH__TOKENS: TOKEN,
      SLUICE__TELEMETRY__FORMAT: 'json',
      SLUICE__TELEMETRY__LEVEL: 'info,sluice=debug,sqlx=warn,sea_orm=warn',
      SLUICE__ENGINE__THREADS: '2',
    },
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: server.stdout });
  base = await new Promise((resolveBase, reject) => {
    const timer = setTimeout(() => reject(new Error('the server did not start within 60 s')), 60000);
    server.on('exit', (code) => reject(new Error(`the server exited with ${code}`)));
    lines.on('line', (line) => {
      let entry;
      try { entry = JSON.parse(line); } catch { assert.fail(`not a JSON log line: ${line}`); }
      logLines.push(entry);
      if (entry.address && String(entry.message || '').startsWith('sluice listening')) {
        clearTimeout(timer);
        resolveBase(`http://${entry.address}`);
      }
    });
  });
  return files;
}

async function api(path, body) {
  const res = await fetch(`${base}/api/v1.0${path}`, {
    method: body ? 'POST' : 'GET',
    headers: { Authorization: `Bearer ${TOKEN}`, 'Content-Type': 'application/json' },
    body: body ? JSON.stringify(body) : undefined,
  });
  const json = await res.json();
  assert.ok(res.ok, `${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

let inputs = {};

before(async () => {
  mkdirSync(ARTIFACTS, { recursive: true });
  const files = await startServer();
  const raw = await api('/data-stores', { name: 'raw_files', kind: 'file', engine: 'csv', connection: { type: 'file', path: join(files, 'in') } });
  const mart = await api('/data-stores', { name: 'mart', kind: 'relational_db', engine: 'sqlite', connection: { type: 'file', path: join(files, 'out', 'mart.db') } });
  await api('/data-stores', { name: 'shop_db', kind: 'relational_db', engine: 'postgres', connection: { type: 'db', host: '127.0.0.1', port: 5432, user: 'app', password: PASSWORD, db_name: 'shop' } });
  const common = { source_store_ids: [raw.id], target_store_id: mart.id, sources: [{ name: 'orders', store_id: raw.id, path: 'orders.csv' }] };
  inputs.marts = await api('/flow-inputs', { ...common, name: 'shop_marts', transforms: [
    { name: 'stg_orders', sql: 'SELECT id, customer, amount, lower(status) AS status FROM orders' },
    { name: 'paid', sql: "SELECT * FROM stg_orders WHERE status = 'paid'" },
    { name: 'customer_totals', sql: 'SELECT customer, count(*) AS n, sum(amount) AS total FROM paid GROUP BY customer' },
    { name: 'status_counts', sql: 'SELECT status, count(*) AS n FROM stg_orders GROUP BY status' },
  ] });
  inputs.checked = await api('/flow-inputs', { ...common, name: 'checked_orders', transforms: [
    { name: 'stg_orders', sql: 'SELECT id, customer, amount, lower(status) AS status FROM orders' },
  ], checks: [
    { node: 'stg_orders', type: 'unique', columns: ['id'] },
    { node: 'stg_orders', type: 'accepted_values', column: 'status', values: ['paid'], severity: 'warn' },
  ] });
  inputs.slow = await api('/flow-inputs', { ...common, name: 'slow_cross_join', transforms: [
    { name: 'heavy', sql: 'SELECT count(*) AS n FROM range(300000) r1 CROSS JOIN range(300000) r2' },
  ] });
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  if (browser) await browser.close();
  if (server && server.exitCode === null) {
    const exited = new Promise((r) => server.once('exit', r));
    server.kill('SIGTERM');
    await Promise.race([exited, new Promise((r) => setTimeout(r, 15000))]);
    if (server.exitCode === null) server.kill('SIGKILL');
  }
  if (temp) rmSync(temp, { recursive: true, force: true });
});

async function newPage() {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
  // (The first API call before the token is typed is a 401, which Chromium logs; nothing else may fail.)
  page.on('console', (m) => {
    if (m.type() === 'error' && !/status of 401/.test(m.text())) problems.push(`console: ${m.text()}`);
  });
  // Nothing may be fetched from anywhere but the server itself.
  page.on('request', (r) => { if (!r.url().startsWith(base)) problems.push(`outside request: ${r.url()}`); });
  return { page, problems };
}

async function login(page) {
  await page.goto(`${base}/`);
  await page.locator('#token-panel').waitFor({ state: 'visible', timeout: 10000 });
  await page.fill('#token-input', TOKEN);
  await page.click('#token-form button[type=submit]');
  await page.locator('#token-panel').waitFor({ state: 'hidden' });
}

const shot = (page, name) => page.screenshot({ path: join(ARTIFACTS, `${name}.png`), fullPage: true });

test('start a flow from the dashboard and watch it complete', async () => {
  const { page, problems } = await newPage();
  await login(page);
  await page.locator('h1', { hasText: 'Flows' }).waitFor();
  await shot(page, '01-flows-empty');

  await page.click('a[data-nav=inputs]');
  await page.click(`#inputs tr[data-input="${inputs.marts.id}"] a`);
  await page.locator('#transforms').waitFor();
  const sql = await page.locator('#transforms').innerText();
  assert.match(sql, /SELECT customer, count\(\*\) AS n, sum\(amount\) AS total FROM paid GROUP BY customer/);
  assert.equal(await page.locator('.dag g.node').count(), 1 + 4 + 2);
  await shot(page, '02-flow-input');

  await page.click('#start-flow');
  await page.waitForURL(/#\/flows\/\d+$/);
  const flowId = Number(page.url().split('/').pop());
  await page.locator('#flow-state [data-state=COMPLETED]').waitFor({ timeout: 120000 });
  await page.locator('#flow-progress [data-percent="100"]').waitFor({ timeout: 10000 });
  const tasks = await api(`/flows/${flowId}`);
  assert.equal(tasks.output.state, 'COMPLETED');
  assert.equal(await page.locator('#dag g.node[data-state=COMPLETED]').count(), tasks.output.tasks.length);
  assert.equal(await page.locator('#tasks tbody tr').count(), tasks.output.tasks.length);
  assert.ok(await page.locator('#cancel').isDisabled());
  await page.locator('#log div', { hasText: 'INFO [flow] flow completed' }).waitFor();
  assert.equal(await page.locator('#errors li').count(), 0);
  await shot(page, '03-flow-completed');

  // The list shows it COMPLETED at 100%, and the filter keeps only that state.
  await page.click('a[data-nav=flows]');
  const row = page.locator(`#flows tr[data-flow="${flowId}"]`);
  await row.locator('[data-state=COMPLETED]').waitFor();
  await row.locator('[data-percent="100"]').waitFor();
  await page.selectOption('#state-filter', 'FAILED');
  await page.waitForURL(/state=FAILED/);
  await row.waitFor({ state: 'detached' });
  await page.selectOption('#state-filter', 'COMPLETED');
  await row.waitFor();
  await shot(page, '04-flows-completed');
  assert.deepEqual(problems, []);

  // One flow's story can be filtered out of the service log by flow_id.
  const mine = logLines.filter((l) => l.flow_id === flowId);
  assert.ok(mine.some((l) => l.message === 'flow ended' && l.state === 'COMPLETED'), JSON.stringify(mine));
  // customer_totals is inlined into the unit that writes it: its lines name the unit (`task`) and
  // every node the unit computes (`nodes`).
  assert.ok(
    mine.some((l) => typeof l.task === 'string' && (l.nodes || '').split(',').includes('customer_totals')),
    'task lines carry the task and its nodes: ' + JSON.stringify(mine.filter((l) => l.task)),
  );
});

test('cancel a running flow from its page', async () => {
  const { page, problems } = await newPage();
  await login(page);
  await page.goto(`${base}/#/inputs/${inputs.slow.id}`);
  await page.click('#start-flow');
  await page.waitForURL(/#\/flows\/\d+$/);
  const flowId = Number(page.url().split('/').pop());
  await page.locator('#dag g.node[data-task=heavy][data-state=RUNNING]').waitFor({ timeout: 60000 });
  await page.locator('#flow-state [data-state=RUNNING]').waitFor();
  await shot(page, '05-flow-running');
  await page.click('#cancel');
  await page.locator('#flow-state [data-state=CANCELLED]').waitFor({ timeout: 10000 });
  await page.locator('#dag g.node[data-task=heavy][data-state=CANCELLED]').waitFor();
  await page.locator('#log div', { hasText: 'cancel requested' }).waitFor();
  const flow = await api(`/flows/${flowId}`);
  assert.equal(flow.output.state, 'CANCELLED');
  await shot(page, '06-flow-cancelled');
  assert.deepEqual(problems, []);
});

test('data store pages never show a password', async () => {
  const { page, problems } = await newPage();
  await login(page);
  await page.click('a[data-nav=stores]');
  await page.locator('#stores tbody tr').nth(2).waitFor();
  await page.locator('#stores a', { hasText: '#3' }).click();
  await page.locator('#store').waitFor();
  const text = await page.locator('main').innerText();
  assert.match(text, /set \(never shown\)/);
  assert.ok(!(await page.content()).includes(PASSWORD));
  assert.ok(!(await page.content()).includes(TOKEN));
  await shot(page, '07-data-store');
  assert.deepEqual(problems, []);
});

test('a flow page shows its checks with their counts and samples', async () => {
  const { page, problems } = await newPage();
  await login(page);
  const flow = await api('/flows', { flow_input_id: inputs.checked.id });
  await page.goto(`${base}/#/flows/${flow.id}`);
  await page.locator('#flow-state [data-state=COMPLETED]').waitFor({ timeout: 120000 });
  const warned = page.locator('#checks tr[data-check="accepted_values(stg_orders.status)"]');
  await warned.locator('[data-state=WARNED]').waitFor({ timeout: 10000 });
  const done = await api(`/flows/${flow.id}`);
  const check = done.output.checks.find((c) => c.name === 'accepted_values(stg_orders.status)');
  assert.equal(check.state, 'WARNED');
  assert.ok(check.failing_rows > 0);
  assert.equal((await warned.locator('td.num').innerText()).replace(/\D/g, ''), String(check.failing_rows));
  assert.equal(await warned.locator('pre.sample').count(), 1);
  assert.match(await warned.locator('pre.sample').innerText(), /"status":"open"/);
  await page.locator('#checks tr[data-check="unique(stg_orders.id)"] [data-state=PASSED]').waitFor();
  assert.equal(await page.locator('#checks tbody tr').count(), 2);
  assert.equal(await page.locator('#dag g.node').count(), 1 + 1 + 1 + 2);
  await shot(page, '08-flow-checks');
  assert.deepEqual(problems, []);
});
