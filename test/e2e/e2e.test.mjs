// LoRA Lens inside a real VS Code (code-server 4.100.3), driven headless through Debian's chromium with
// playwright-core. The extension is the repository itself (built dist/), linked into a fresh extensions
// folder; the workspace holds checkpoints written by fixtures.mjs. Run through run.mjs.
// Env: CODE_SERVER, CHROMIUM, SHOT_DIR, KEEP_TMP=1, E2E_VSIX (install that .vsix instead of linking the repository),
// E2E_GPU_ENV (JSON: extra environment for the installed engine's GPU check).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { writeFixtures } from './fixtures.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, '..', '..');
const CODE_SERVER = process.env.CODE_SERVER ?? path.join(here, 'node_modules', '.bin', 'code-server');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const SHOTS = process.env.SHOT_DIR ?? path.join(here, 'shots');
const PKG = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8'));
const EXT_ID = `${PKG.publisher}.${PKG.name}`;

let tmp, ws, fx, csProc, csLog, browser, page;

function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => { const p = srv.address().port; srv.close(() => resolve(p)); });
  });
}

async function waitForHealth(url, ms) {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    try { if ((await fetch(url)).ok) return; } catch { /* not up yet */ }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`code-server not healthy after ${ms} ms; log:\n${fs.readFileSync(csLog, 'utf8')}`);
}

// code-server, chromium and the extension host keep config, caches and IPC sockets out of the real
// home and the shared temp folder.
function env() {
  return { ...process.env, XDG_CONFIG_HOME: path.join(tmp, 'xdg-config'), XDG_DATA_HOME: path.join(tmp, 'xdg-data'),
    XDG_CACHE_HOME: path.join(tmp, 'xdg-cache'), TMPDIR: path.join(tmp, 't') };
}

async function shot(name) {
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`), animations: 'disabled' });
}

const quickInput = () => page.locator('.quick-input-widget');

async function palette(label) {
  await page.keyboard.press('F1');
  const input = quickInput().locator('.quick-input-box input');
  await input.waitFor({ state: 'visible' });
  await input.fill(`>${label}`);
  await quickInput().locator('.monaco-list-row', { hasText: label }).first().click();
}

/** Waits until the quick input asks the question titled `title` (the previous one may still be on screen). */
async function asked(title) {
  await quickInput().locator('.quick-input-title', { hasText: title }).waitFor({ timeout: 20000 });
}

/**
 * Answers the question titled `title` with the row whose label is exactly `label` (labels like
 * tiny-llama / tiny-llama-qv share prefixes; the previous question may still be on screen).
 */
async function pick(title, label) {
  await asked(title);
  const row = quickInput().locator('.monaco-list-row').filter({ has: page.locator('.label-name', { hasText: new RegExp(`^${label.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`) }) }).first();
  await row.waitFor({ timeout: 20000 });
  await row.click();
}

/** Accepts the proposed value of an input box (the output path) after checking it. */
async function acceptInput(expectEnd) {
  const input = quickInput().locator('.quick-input-box input');
  await input.waitFor({ state: 'visible' });
  await page.waitForFunction((end) => document.querySelector('.quick-input-widget .quick-input-box input')?.value.endsWith(end), expectEnd, { timeout: 10000 });
  const value = await input.inputValue();
  await input.press('Enter');
  return value;
}

/**
 * Shows a view container. Clicking an active container's icon hides the side bar, and the extension may
 * reveal its own view at the same moment (Open in Census), so click only while it is not shown, and check again.
 */
async function showContainer(prefix) {
  const item = page.locator(`.activitybar li.action-item:has(> a[aria-label^="${prefix}"])`);
  await item.waitFor({ timeout: 60000 });
  const shown = async () => ((await item.getAttribute('class')) ?? '').split(/\s+/).includes('checked') && (await page.locator('[id="workbench.parts.sidebar"]').isVisible());
  for (let i = 0; i < 5; i++) {
    if (await shown()) return;
    await item.locator('a').click();
    for (let t = 0; t < 10 && !(await shown()); t++) await page.waitForTimeout(200);
  }
  if (!(await shown())) throw new Error(`the ${prefix} view container did not show`);
}

const explorerRow = (label) => page.locator(`.explorer-folders-view .monaco-list-row[aria-label="${label}"]`);

/** Clicks a tree row until `expanded()` holds: a click can be lost while the tree refreshes, and a refresh can fold the row again. */
async function clickUntilExpanded(row, expanded, what) {
  await row.waitFor({ timeout: 20000 });
  for (let i = 0; i < 10; i++) {
    if (await expanded()) return;
    await row.click({ timeout: 5000 }).catch(() => {});
    for (let t = 0; t < 15 && !(await expanded()); t++) await page.waitForTimeout(200);
  }
  if (!(await expanded())) throw new Error(`${what} did not expand`);
}

/** Expands an Explorer folder; a job's output landing in the workspace refreshes the Explorer. */
async function expandExplorer(label) {
  // Expanded, or merged into a compact row with its only child (adapters/tiny-llama-qv), which takes the child's label.
  const open = () => page.evaluate((l) => {
    const r = document.querySelector(`.explorer-folders-view .monaco-list-row[aria-label="${l}"]`);
    return r === null || r.getAttribute('aria-expanded') === 'true';
  }, label);
  await clickUntilExpanded(explorerRow(label), open, `the Explorer folder ${label}`);
}

/** Right-clicks an Explorer row and runs a menu entry; the entries depend on context keys the extension sets after its workspace scan, so retry until they show. */
async function contextMenu(label, entry) {
  const item = page.locator('.context-view .monaco-menu .action-label', { hasText: entry });
  await explorerRow(label).waitFor({ timeout: 20000 });
  for (let i = 0; i < 20; i++) {
    await explorerRow(label).click({ button: 'right' });
    try {
      await item.first().waitFor({ timeout: 1500 });
      return item;
    } catch {
      await page.keyboard.press('Escape');
    }
  }
  throw new Error(`no '${entry}' in the context menu of ${label}`);
}

/** Clicks a context-menu entry; a click that lands while the menu is still settling is lost, so retry until the menu closes. */
async function clickMenuItem(item) {
  const menu = page.locator('.context-view .monaco-menu');
  for (let i = 0; i < 5; i++) {
    await item.first().click().catch(() => {});
    try {
      await menu.waitFor({ state: 'hidden', timeout: 2000 });
      return;
    } catch { /* still open */ }
  }
  throw new Error('the context menu did not take the click');
}

const censusRows = () => page.locator('[id="workbench.view.extension.loraLens"] .monaco-list-row');
async function censusItems() {
  return censusRows().evaluateAll((els) => els.map((r) => ({
    label: r.querySelector('.label-name')?.textContent ?? '',
    description: r.querySelector('.label-description')?.textContent ?? '',
  })));
}
const censusRow = (label) => censusRows().filter({ has: page.locator('.label-name', { hasText: label }) }).first();

async function expandCensus(label) {
  const row = censusRow(label);
  await clickUntilExpanded(row, async () => (await row.getAttribute('aria-expanded')) === 'true', `the census row ${label}`);
}

function webview() {
  return page.frameLocator(`iframe.webview.ready[src*="extensionId=${EXT_ID}"]`).frameLocator('iframe#active-frame');
}

/**
 * The window, the panel alone, and each section of the panel (shots/sections/<name>-<section>.png, to
 * review every chart and table), after checking that every chart has its data table beside it.
 */
async function panelShot(name) {
  fs.mkdirSync(path.join(SHOTS, 'sections'), { recursive: true });
  const wv = webview();
  const charts = await wv.locator('canvas[id^="chart-"]').evaluateAll((cs) => cs.map((c) => ({
    id: c.id.slice('chart-'.length),
    table: c.closest('section')?.querySelector(`table[id="table-${c.id.slice('chart-'.length)}"]`) !== null,
  })));
  for (const c of charts) assert.ok(c.table, `chart ${c.id} of ${name} has no data table beside it`);
  await page.locator(`iframe.webview.ready[src*="extensionId=${EXT_ID}"]`).screenshot({ path: path.join(SHOTS, `${name}-only.png`) });
  await shot(name);
  for (const section of await wv.locator('section[id^="section-"]').all()) {
    const id = (await section.getAttribute('id')).slice('section-'.length);
    await section.screenshot({ path: path.join(SHOTS, 'sections', `${name}-${id}.png`), animations: 'disabled' });
  }
  await wv.locator('body').evaluate(() => window.scrollTo(0, 0)); // later window shots show the panel's top
}

/**
 * Answers a save dialog (code-server's own, in the quick input) that proposes `fileName`, with that
 * name in the test's exports folder (outside the workspace, whose Explorer rows would shift); returns the path.
 */
async function answerSaveDialog(fileName) {
  await asked(`Save ${fileName}`);
  const input = quickInput().locator('.quick-input-box input');
  await page.waitForFunction((end) => document.querySelector('.quick-input-widget .quick-input-box input')?.value.endsWith(end), fileName, { timeout: 10000 });
  const target = path.join(tmp, 'exports', fileName);
  fs.mkdirSync(path.dirname(target), { recursive: true });
  await input.fill(target);
  // The dialog lists the typed folder as it changes; a press while it does so can be lost: retry until it closes.
  for (let i = 0; i < 10; i++) {
    await input.press('Enter').catch(() => {});
    try {
      await quickInput().waitFor({ state: 'hidden', timeout: 1500 });
      return target;
    } catch { /* still open */ }
  }
  throw new Error(`the save dialog did not take ${target}`);
}

/** The engine processes of this test's VS Code (found by the TMPDIR it inherits), by pid. */
function enginePids() {
  const pids = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const cmd = fs.readFileSync(`/proc/${d}/cmdline`, 'utf8');
      if (!cmd.includes('engine-host.js')) continue;
      const environ = fs.readFileSync(`/proc/${d}/environ`, 'utf8').split('\0');
      if (environ.includes(`TMPDIR=${path.join(tmp, 't')}`)) pids.push(Number(d));
    } catch { /* gone, or not ours */ }
  }
  return pids;
}

/** The first canvas pixel of a chart inside the panel, as [r, g, b, a]. */
const chartPixel = (id) => webview().locator(`canvas#chart-${id}`).evaluate((c) => [...c.getContext('2d').getImageData(2, 2, 1, 1).data]);
const luminance = ([r, g, b]) => (0.2126 * r + 0.7152 * g + 0.0722 * b) / 255;

/** A test that leaves a screenshot of the window when it fails (shots/FAIL-<name>.png). */
function uiTest(name, fn) {
  test(name, async () => {
    try {
      await fn();
    } catch (e) {
      await shot(`FAIL-${name.replace(/[^\w]+/g, '-').slice(0, 60)}`).catch(() => {});
      throw e;
    }
  });
}

const toast = (text) => page.locator('.notification-toast .notification-list-item-message', { hasText: text });

before(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-lens-e2e-'));
  ws = path.join(tmp, 'workspace');
  fx = writeFixtures(ws);
  for (const d of ['user-data/User', 'extensions', 't']) fs.mkdirSync(path.join(tmp, d), { recursive: true });
  fs.writeFileSync(path.join(tmp, 'config.yaml'), 'auth: none\ncert: false\n');
  fs.writeFileSync(path.join(tmp, 'user-data', 'User', 'settings.json'), JSON.stringify({
    'workbench.startupEditor': 'none', 'workbench.tips.enabled': false, 'workbench.enableExperiments': false,
    'telemetry.telemetryLevel': 'off', 'extensions.autoCheckUpdates': false, 'extensions.autoUpdate': false,
    'extensions.ignoreRecommendations': true, 'update.mode': 'none', 'security.workspace.trust.enabled': false,
    'git.enabled': false, 'workbench.colorTheme': 'Default Dark Modern', 'loraLens.device': 'cpu',
  }, null, 2));
  const dirs = ['--config', path.join(tmp, 'config.yaml'), '--user-data-dir', path.join(tmp, 'user-data'), '--extensions-dir', path.join(tmp, 'extensions')];
  if (process.env.E2E_VSIX) {
    execFileSync(CODE_SERVER, [...dirs, '--install-extension', path.resolve(process.env.E2E_VSIX), '--force'], { env: env(), stdio: 'pipe' });
  } else {
    // The repository is the unpacked extension (package.json + dist/).
    assert.ok(fs.existsSync(path.join(ROOT, 'dist', 'extension.js')), 'run npm run build first');
    fs.symlinkSync(ROOT, path.join(tmp, 'extensions', `${EXT_ID}-${PKG.version}`));
  }

  const port = await freePort();
  csLog = path.join(tmp, 'code-server.log');
  const logFd = fs.openSync(csLog, 'a');
  csProc = spawn(CODE_SERVER, [...dirs, '--bind-addr', `127.0.0.1:${port}`, '--auth', 'none',
    '--disable-telemetry', '--disable-update-check', '--disable-workspace-trust', '--disable-getting-started-override', ws],
  { env: env(), stdio: ['ignore', logFd, logFd], detached: true });
  await waitForHealth(`http://127.0.0.1:${port}/healthz`, 30000);

  browser = await chromium.launchPersistentContext(path.join(tmp, 'chromium-profile'), {
    executablePath: CHROMIUM, headless: true, viewport: { width: 1600, height: 950 }, env: env(),
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = browser.pages()[0] ?? await browser.newPage();
  await page.goto(`http://127.0.0.1:${port}/?folder=${encodeURIComponent(ws)}`, { timeout: 120000 }); // a loaded machine can take long
  await page.locator('.monaco-workbench').waitFor({ timeout: 60000 });
  await page.locator('.activitybar .action-item a[aria-label="LoRA Lens"]').waitFor({ timeout: 60000 });
  // A wider side bar, so the tree's descriptions (shapes, cosines) show in the screenshots.
  const bar = await page.locator('.part.sidebar').boundingBox();
  await page.mouse.move(bar.x + bar.width + 1, bar.y + 300);
  await page.mouse.down();
  await page.mouse.move(660, bar.y + 300, { steps: 5 });
  await page.mouse.up();
});

after(async () => {
  await browser?.close().catch(() => {});
  if (csProc?.pid) {
    try { process.kill(-csProc.pid, 'SIGTERM'); } catch { /* already gone */ }
  }
  if (tmp && !process.env.KEEP_TMP) fs.rmSync(tmp, { recursive: true, force: true });
});

uiTest('the empty census says what the workspace holds, offers the demo, and the walkthrough opens', async () => {
  await showContainer('LoRA Lens');
  const view = page.locator('[id="workbench.view.extension.loraLens"]');
  await view.locator('.monaco-button', { hasText: 'Try the Demo' }).waitFor({ timeout: 30000 });
  await page.locator('.part.sidebar').getByText('(2 adapters, 4 models found)').first().waitFor({ timeout: 30000 });
  await shot('census-welcome');
  await view.locator('.monaco-button', { hasText: 'Get Started' }).click();
  const walkthrough = page.locator('.gettingStartedContainer');
  await walkthrough.getByText('Get Started with LoRA Lens').first().waitFor({ timeout: 30000 });
  for (const step of ['Get checkpoints to look at', 'Open a checkpoint in the Parameter Census', 'Validate in one go', 'How much rank does an adapter use?']) {
    await walkthrough.getByText(step).first().waitFor({ timeout: 10000 });
  }
  await shot('walkthrough');
  await palette('View: Close All Editors');
});

uiTest('Explorer context menu opens a model in the Parameter Census tree', async () => {
  await showContainer('Explorer');
  await expandExplorer('models');
  const item = await contextMenu('tiny-llama', 'Open Checkpoint in Census');
  // A model folder gets the model actions, not the adapter ones.
  for (const entry of ['Extract Task Vector…', 'Build UNMERGE Mask…', 'Decompose Merged Model…', 'Estimate LoRA Parameters…']) {
    assert.equal(await page.locator('.context-view .monaco-menu .action-label', { hasText: entry }).count(), 1, entry);
  }
  for (const entry of ['Merge LoRA Adapter…', 'Compare Adapter with Merged/Fine-tuned Model…', 'Validate Equivalence…', 'Analyze Merge Precision…']) {
    assert.equal(await page.locator('.context-view .monaco-menu .action-label', { hasText: entry }).count(), 0, entry);
  }
  await shot('explorer-context-menu');
  await clickMenuItem(item);
  await censusRow('tiny-llama').waitFor({ timeout: 30000 });
  await expandCensus('Attention');
  await censusRow('Layer 1 — 4 tensors').waitFor();
  await expandCensus('Layer 1 — 4 tensors');
  await censusRow('self_attn.q_proj.weight').waitFor();
  const items = await censusItems();
  assert.deepEqual(items.slice(0, 4).map((i) => i.label), ['tiny-llama', 'Embeddings — 2 tensors', 'Attention — 8 tensors', 'Layer 0 — 4 tensors']);
  assert.match(items[0].description, /^model · 21 tensors · /);
  const q = items.find((i) => i.label === 'self_attn.q_proj.weight');
  assert.equal(q.description, '64×64 · F32 · 4,096');
  await shot('census-tree');
});

uiTest('an adapter folder gets the adapter actions, and its census shows its factors', async () => {
  await showContainer('Explorer');
  await expandExplorer('adapters');
  const item = await contextMenu('tiny-llama-qv', 'Open Checkpoint in Census');
  for (const entry of ['Merge LoRA Adapter…', 'Compare Adapter with Merged/Fine-tuned Model…', 'Validate Equivalence…', 'Analyze Merge Precision…']) {
    assert.equal(await page.locator('.context-view .monaco-menu .action-label', { hasText: entry }).count(), 1, entry);
  }
  assert.equal(await page.locator('.context-view .monaco-menu .action-label', { hasText: 'Extract Task Vector…' }).count(), 0);
  await clickMenuItem(item);
  await censusRow('tiny-llama-qv').waitFor({ timeout: 30000 });
  // An adapter's own tensors are its lora_A / lora_B factors, never LoRA targets (those are the base's weights).
  const items = await censusItems();
  const at = items.findIndex((i) => i.label === 'tiny-llama-qv');
  assert.equal(items[at + 1]?.label, 'Attention — 8 tensors', JSON.stringify(items));
  assert.match(items[at].description, /^adapter · 8 tensors · /);
});

uiTest('Compare from the palette: numbers in the panel, then cosine and norms in the tree', async () => {
  await palette('LoRA Lens: Compare Adapter with Merged/Fine-tuned Model…');
  await asked('LoRA adapter folder (1/4)'); // multi-step questions count their steps
  await pick('LoRA adapter folder', 'tiny-llama-qv');
  await pick('Base model folder', 'tiny-llama'); // suggested from the adapter's base_model_name_or_path
  await pick('Merged or fine-tuned model folder', 'tiny-llama-finetuned');
  const out = await acceptInput('tiny-llama-qv-compare');
  const wv = webview();
  await wv.locator('#panel[data-kind="compare"][data-state="ready"]').waitFor({ timeout: 60000 });
  assert.equal(await wv.locator('#summary-equivalent').getAttribute('data-value'), 'true');
  const meanCosine = Number(await wv.locator('#mean-cosine').getAttribute('data-value'));
  assert.ok(meanCosine > 0.9999 && meanCosine <= 1, String(meanCosine));
  assert.equal(Number(await wv.locator('#summary-shared').getAttribute('data-value')), 4);
  assert.ok(fs.existsSync(path.join(out, 'comparison_results.json')));
  await panelShot('panel-compare');

  await showContainer('LoRA Lens');
  await page.waitForFunction(() => [...document.querySelectorAll('[id="workbench.view.extension.loraLens"] .label-description')].some((e) => e.textContent.includes('cos ')), null, { timeout: 20000 });
  const q = (await censusItems()).find((i) => i.label === 'self_attn.q_proj.weight' && i.description.includes('cos'));
  assert.ok(q, JSON.stringify(await censusItems()));
  const cos = Number(/cos ([\d.]+)/.exec(q.description)[1]); // the comparison first, where a narrow side bar shows it
  assert.ok(cos > 0.9999 && cos <= 1, q.description);
  assert.match(q.description, /^cos [\d.]+ · 64×64 · F32 · 4,096 · LoRA$/);
  // The base's tree marks the adapter's targets (q and v of both layers), and only them.
  const items = await censusItems();
  assert.ok(items.some((i) => i.label === 'Attention — 8 tensors, 4 LoRA targets'), JSON.stringify(items.map((i) => i.label)));
  const k = items.find((i) => i.label === 'self_attn.k_proj.weight');
  assert.equal(k.description, '64×64 · F32 · 4,096');
  await shot('census-tree-compared');

  // Exports: the report as JSON and a chart as PNG, through the save dialog, into the workspace.
  await wv.locator('#export-json').click();
  const json = await answerSaveDialog('compare-report.json');
  await wv.locator('#status', { hasText: `Saved ${json}` }).waitFor({ timeout: 20000 });
  assert.deepEqual(JSON.parse(fs.readFileSync(json, 'utf8')), JSON.parse(fs.readFileSync(path.join(out, 'comparison_results.json'), 'utf8')));
  await wv.locator('#export-png-cosine').click();
  const png = await answerSaveDialog('compare-cosine.png');
  await wv.locator('#status', { hasText: `Saved ${png}` }).waitFor({ timeout: 20000 });
  assert.deepEqual([...fs.readFileSync(png).subarray(0, 8)], [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
  assert.ok(fs.statSync(png).size > 5000, 'a drawn chart, not an empty canvas');
  // Every table exports as CSV, with the raw numbers.
  await wv.locator('#export-csv-cosine').click();
  const csv = await answerSaveDialog('compare-cosine.csv');
  await wv.locator('#status', { hasText: `Saved ${csv}` }).waitFor({ timeout: 20000 });
  const csvLines = fs.readFileSync(csv, 'utf8').trim().split('\r\n');
  assert.equal(csvLines[0], 'tensor,layer,projection,cosine,relative Frobenius error');
  assert.equal(csvLines.length, 1 + 4, 'a row per shared tensor');
  // The whole panel as one HTML file, which a browser opens on its own (charts as images, no script).
  await wv.locator('#export-html').click();
  const html = await answerSaveDialog('compare-report.html');
  await toast('Saved the report as').waitFor({ timeout: 20000 });
  const report = await browser.newPage();
  await report.goto(`file://${html}`);
  assert.equal(await report.locator('#panel-title').innerText(), 'Adapter tiny-llama-qv vs merged/fine-tuned model tiny-llama-finetuned');
  const images = await report.locator('img.chart-image').evaluateAll((imgs) => imgs.map((i) => i.naturalWidth));
  assert.ok(images.length >= 4 && images.every((w) => w > 100), `charts as images: ${images}`);
  assert.ok(await report.locator('#table-cosine tbody tr').count() === 4);
  await report.screenshot({ path: path.join(SHOTS, 'html-report.png'), fullPage: false });
  await report.close();
  await palette('Notifications: Clear All Notifications');

  // A tensor picked in the panel's table is revealed and selected in the tree.
  await wv.locator('#table-cosine').getByText('model.layers.0.self_attn.v_proj.weight', { exact: true }).click();
  const selected = page.locator('[id="workbench.view.extension.loraLens"] .monaco-list-row.selected .label-name');
  await selected.filter({ hasText: 'self_attn.v_proj.weight' }).waitFor({ timeout: 20000 });
  const row = page.locator('[id="workbench.view.extension.loraLens"] .monaco-list-row.selected');
  assert.match(await row.getAttribute('aria-label'), /model\.layers\.0\.self_attn\.v_proj\.weight/);
});

uiTest('a tensor\'s context menu: copy its name, statistics, charts, LoRA targets, reveal', async () => {
  await palette('View: Close All Editors');
  await showContainer('LoRA Lens');
  const row = censusRows().filter({ has: page.locator('.label-name', { hasText: /^self_attn\.q_proj\.weight$/ }) }).first();
  await row.waitFor({ timeout: 20000 });
  await row.click({ button: 'right' });
  const menu = page.locator('.context-view .monaco-menu');
  await menu.waitFor({ timeout: 10000 });
  for (const entry of ['Copy Tensor Name', 'Show Tensor Statistics…', 'Show Census Charts', 'Show LoRA Targets of an Adapter…', 'Reveal in Explorer']) {
    assert.equal(await menu.locator('.action-label', { hasText: entry }).count(), 1, entry);
  }
  await shot('tensor-context-menu');
  await clickMenuItem(menu.locator('.action-label', { hasText: 'Show Census Charts' }));
  await webview().locator('#panel[data-kind="census"][data-state="ready"]').waitFor({ timeout: 30000 });
  assert.match(await webview().locator('#panel-title').innerText(), /^Census: tiny-llama$/);
  await palette('View: Close All Editors');
});

/** Opens a q_proj tensor's statistics from its inline action in the census tree; resolves at the first question. */
async function tensorStatsFromTree() {
  await showContainer('LoRA Lens');
  const row = censusRows().filter({ has: page.locator('.label-name', { hasText: /^self_attn\.q_proj\.weight$/ }) }).first();
  await row.waitFor({ timeout: 20000 });
  await row.hover();
  await row.locator('.action-label[aria-label="Show Tensor Statistics…"]').click();
  await asked('Statistics of self_attn.q_proj.weight');
}

uiTest('tensor statistics from the tree: Back returns to the first question; histogram and heat map of the adapter\'s ΔW', async () => {
  await palette('View: Close All Editors');
  await tensorStatsFromTree();
  await asked('(1/2)');
  // The base was opened with the adapter (by Compare): its ΔW on this weight is offered.
  for (const label of ['Its values', 'ΔW of tiny-llama-qv', 'Minus a base model…']) {
    await quickInput().locator('.monaco-list-row .label-name', { hasText: label }).first().waitFor({ timeout: 10000 });
  }
  assert.equal(await quickInput().locator('.action-label.codicon-quick-input-back:visible').count(), 0, 'no Back on the first question');
  await pick('Statistics of self_attn.q_proj.weight', 'Minus a base model…');
  await asked('Base model folder (2/2)');
  await shot('picker-back');
  await quickInput().locator('.action-label.codicon-quick-input-back').first().click();
  await asked('Statistics of self_attn.q_proj.weight (1/2)');
  await pick('Statistics of self_attn.q_proj.weight', 'ΔW of tiny-llama-qv');
  const wv = webview();
  await wv.locator('#panel[data-kind="stats"][data-state="ready"]').waitFor({ timeout: 60000 });
  assert.match(await wv.locator('#panel-title').innerText(), /^Statistics: model\.layers\.\d\.self_attn\.q_proj\.weight \(ΔW of tiny-llama-qv\)$/);
  assert.equal(Number(await wv.locator('#summary-elements').getAttribute('data-value')), 4096);
  assert.equal(Number(await wv.locator('#summary-non-finite').getAttribute('data-value')), 0);
  assert.ok(Number(await wv.locator('canvas#chart-histogram').getAttribute('data-points')) > 10);
  const heat = wv.locator('canvas#heatmap-heatmap');
  assert.deepEqual([await heat.getAttribute('data-rows'), await heat.getAttribute('data-cols')], ['64', '64']);
  const maxOfMax = Number(await heat.getAttribute('data-max'));
  assert.ok(maxOfMax > 0);
  // Each cell is one element here: the mean |x| layer has the same largest value; the pixels are drawn.
  await wv.locator('#heatmap-layer-heatmap').selectOption({ label: 'mean |x|' });
  assert.equal(Number(await heat.getAttribute('data-max')), maxOfMax);
  const distinct = await heat.evaluate((c) => new Set(Array.from(c.getContext('2d').getImageData(0, 0, c.width, c.height).data.filter((_, i) => i % 4 === 0))).size);
  assert.ok(distinct > 20, `a ramp of colours, not a flat canvas: ${distinct}`);
  await wv.locator('#heatmap-layer-heatmap').selectOption({ label: 'max |x|' });
  await panelShot('panel-stats');
  await wv.locator('#export-csv-heatmap').click();
  const csv = await answerSaveDialog('stats-heatmap.csv');
  await wv.locator('#status', { hasText: `Saved ${csv}` }).waitFor({ timeout: 20000 });
  const lines = fs.readFileSync(csv, 'utf8').trim().split('\r\n');
  assert.equal(lines[0], 'first row,last row,first column,last column,max |x|,mean |x|');
  assert.equal(lines.length, 1 + 64 * 64);
  await palette('View: Close All Editors');
});

uiTest('a long job is cancelled from its notification and leaves nothing behind', async () => {
  await palette('View: Close All Editors');
  await palette('LoRA Lens: Extract Task Vector…');
  await pick('Fine-tuned (or merged) model folder', 'big-llama-ft');
  await pick('Base model folder', 'big-llama');
  const out = await acceptInput('big-llama-ft-task-vector.safetensors');
  const note = page.locator('.notification-toast', { hasText: 'Extracting the task vector of big-llama-ft' });
  await note.waitFor({ timeout: 20000 });
  await page.waitForFunction(() => [...document.querySelectorAll('.notification-toast')].some((n) => /extract \d+\/\d+/.test(n.textContent)), null, { timeout: 30000 });
  await shot('job-progress');
  await note.locator('.monaco-button', { hasText: 'Cancel' }).click();
  await toast('cancelled; nothing was written').waitFor({ timeout: 30000 });
  const dir = path.dirname(out);
  assert.ok(!fs.existsSync(out));
  assert.deepEqual(fs.readdirSync(dir).filter((f) => f.includes('.partial-')), []);
  await palette('Notifications: Clear All Notifications');
});

uiTest('a crashed engine: the user is told, nothing is left behind, the next job restarts it', async () => {
  await palette('LoRA Lens: Extract Task Vector…');
  await pick('Fine-tuned (or merged) model folder', 'big-llama-ft'); // remembered, on top
  await pick('Base model folder', 'big-llama');
  const out = await acceptInput('big-llama-ft-task-vector.safetensors');
  await page.waitForFunction(() => [...document.querySelectorAll('.notification-toast')].some((n) => /extract \d+\/\d+/.test(n.textContent)), null, { timeout: 30000 });
  const pids = enginePids();
  assert.equal(pids.length, 1, `one engine process, found ${pids}`);
  process.kill(pids[0], 'SIGKILL');
  const told = page.locator('.notification-toast', { hasText: 'engine stopped unexpectedly (signal SIGKILL) while running extract' });
  await told.waitFor({ timeout: 30000 });
  assert.ok(!fs.existsSync(out));
  assert.deepEqual(fs.readdirSync(path.dirname(out)).filter((f) => f.includes('.partial-')), []);
  // Its "Show Log" opens the output channel "LoRA Lens", which says what happened.
  await told.locator('.monaco-button', { hasText: 'Show Log' }).click();
  await page.locator('.part.panel .view-lines', { hasText: 'engine stopped (signal SIGKILL)' }).waitFor({ timeout: 20000 });
  await shot('engine-crashed');
  await palette('Notifications: Clear All Notifications');
  await palette('View: Hide Panel');

  // The next job forks a fresh engine.
  await palette('LoRA Lens: Extract Task Vector…');
  await pick('Fine-tuned (or merged) model folder', 'tiny-llama-finetuned');
  await pick('Base model folder', 'tiny-llama');
  const small = await acceptInput('tiny-llama-finetuned-task-vector.safetensors');
  await toast(`Task vector written to ${small}`).waitFor({ timeout: 60000 });
  const restarted = enginePids();
  assert.equal(restarted.length, 1);
  assert.notEqual(restarted[0], pids[0]);
  await palette('Notifications: Clear All Notifications');
});

uiTest('a .safetensors file opens in the viewer: verdict, table, filter, whole names, CSV, Open in Census', async () => {
  await palette('View: Close All Editors');
  await showContainer('Explorer');
  await expandExplorer('models');
  await expandExplorer('tiny-llama');
  await explorerRow('model.safetensors').first().click();
  const wv = webview();
  await wv.locator('#panel[data-kind="weights"][data-state="ready"]').waitFor({ timeout: 30000 });
  assert.equal(await wv.locator('#verdict').getAttribute('data-tone'), 'good');
  assert.match(await wv.locator('#verdict').innerText(), /^Valid safetensors: 21 tensors/);
  const rows = wv.locator('#table-tensors tbody tr');
  assert.equal(await rows.count(), 21);
  await wv.locator('#filter-tensors').fill('q_proj');
  await wv.locator('#count-tensors', { hasText: '2 of 21 tensors' }).waitFor();
  const visibleNames = () => wv.locator('#table-tensors tbody tr:not([hidden]) [data-key="name"]').evaluateAll((cs) => cs.map((c) => c.textContent));
  const nameHeader = wv.locator('#table-tensors th[data-key="name"]');
  await nameHeader.locator('button.sort').click();
  await nameHeader.locator('button.sort').click();
  assert.equal(await nameHeader.getAttribute('aria-sort'), 'descending');
  assert.deepEqual(await visibleNames(), ['model.layers.1.self_attn.q_proj.weight', 'model.layers.0.self_attn.q_proj.weight']);
  await wv.locator('#filter-tensors').fill('');
  await wv.locator('#table-tensors th[data-key="bytes"] button.sort').click();
  const bytes = await wv.locator('#table-tensors tbody tr [data-key="bytes"]').evaluateAll((cs) => cs.map((c) => Number(c.dataset.value)));
  assert.deepEqual(bytes, [...bytes].sort((a, b) => a - b), 'sorted by bytes, as numbers');
  assert.ok(bytes[0] < bytes[bytes.length - 1]);
  // In a narrow editor names wrap after their dots only, never inside a word, and nothing paints a
  // background over the underscores of a wrapped line (`post_attention_layernorm` stays readable).
  const wrapping = await wv.locator('#table-tensors').evaluate((t) => {
    t.closest('.table-box').style.width = '360px';
    const cells = [...t.querySelectorAll('tbody [data-key="name"]')];
    const lines = (n) => { const r = document.createRange(); r.selectNodeContents(n); return new Set([...r.getClientRects()].map((x) => Math.round(x.top))).size; };
    const out = {
      wrapped: cells.filter((c) => lines(c.querySelector('a')) > 1).length,
      brokenWords: cells.flatMap((c) => [...c.querySelector('a').childNodes].filter((n) => n.nodeType === 3 && lines(n) > 1).map((n) => n.data)),
      backgrounds: [...new Set(cells.flatMap((c) => [getComputedStyle(c).backgroundColor, getComputedStyle(c.querySelector('a')).backgroundColor]))],
      underlined: cells.filter((c) => getComputedStyle(c.querySelector('a')).textDecorationLine !== 'none').length,
    };
    t.closest('.table-box').style.width = '';
    return out;
  });
  assert.ok(wrapping.wrapped > 0, 'the narrow table wraps names');
  assert.deepEqual(wrapping.brokenWords, [], 'no part of a name between dots breaks');
  assert.deepEqual(wrapping.backgrounds, ['rgba(0, 0, 0, 0)'], 'no background behind names');
  assert.equal(wrapping.underlined, 0, 'no underline through the underscores of names');
  // The tensor index as CSV, with the raw numbers.
  await wv.locator('#export-csv-tensors').click();
  const csv = await answerSaveDialog('model-tensors.csv');
  await wv.locator('#status', { hasText: `Saved ${csv}` }).waitFor({ timeout: 20000 });
  const csvLines = fs.readFileSync(csv, 'utf8').trim().split('\r\n');
  assert.equal(csvLines[0], '#,Name,dtype,Shape,Elements,Bytes,Begin,End,Category');
  assert.equal(csvLines.length, 1 + 21);
  await wv.locator('#filter-tensors').fill('q_proj');
  await wv.locator('#count-tensors', { hasText: '2 of 21 tensors' }).waitFor();
  await panelShot('safetensors-viewer');
  // Open in Census: the file's census in the tree.
  await wv.locator('#open-in-census').click();
  await showContainer('LoRA Lens');
  await censusRow('model.safetensors').waitFor({ timeout: 30000 });
});

let validateOut;
uiTest('precision, validate and census panels draw their reports', async () => {
  for (const [command, kind] of [
    ['LoRA Lens: Analyze Merge Precision…', 'precision'],
    ['LoRA Lens: Validate Equivalence…', 'validate'],
  ]) {
    await palette('View: Close All Editors');
    await palette(command);
    await pick('LoRA adapter folder', 'tiny-llama-qv');
    await pick('Base model folder', 'tiny-llama');
    if (kind === 'validate') {
      const out = await acceptInput('-validate');
      // Validate asks before keeping the merged models, saying what they take and what is free.
      await asked('Keep the merged models and task vectors?');
      const keepRow = quickInput().locator('.monaco-list-row', { hasText: 'Keep the merged models and task vectors' });
      assert.match(await keepRow.innerText(), /Writes about [\d.]+ (KiB|MiB) into .* \([\d.]+ (GiB|TiB|MiB) free\)/);
      await shot('validate-keep-models');
      await pick('Keep the merged models and task vectors?', 'Reports only');
      validateOut = out;
    }
    await webview().locator(`#panel[data-kind="${kind}"][data-state="ready"]`).waitFor({ timeout: 90000 });
    if (kind === 'precision') {
      // 21 tensors differ from the fp32 base after a cast: the 4 the adapter changes and 17 cast artifacts.
      for (const d of ['fp16', 'bf16']) {
        assert.equal(await webview().locator(`#nonzero-tensors-${d}`).getAttribute('data-value'), '21', d);
        assert.equal(await webview().locator(`#adapted-tensors-${d}`).getAttribute('data-value'), '4', d);
        assert.equal(await webview().locator(`#cast-artifact-tensors-${d}`).getAttribute('data-value'), '17', d);
      }
    }
    await panelShot(`panel-${kind}`);
  }
  assert.match(await webview().locator('#status-fp32').innerText(), /PASS/);
  // Reports only: no merged model or task vector was kept.
  for (const d of ['fp32', 'fp16', 'bf16']) {
    assert.ok(fs.existsSync(path.join(validateOut, d, 'comparison_results.json')), d);
    assert.deepEqual(fs.readdirSync(path.join(validateOut, d)).filter((f) => f === 'merged' || f.endsWith('.safetensors')), [], d);
  }
  await palette('View: Close All Editors');
  await showContainer('LoRA Lens');
  await censusRow('tiny-llama').hover();
  await censusRow('tiny-llama').locator('.action-label[aria-label="Show Census Charts"]').click();
  await webview().locator('#panel[data-kind="census"][data-state="ready"]').waitFor({ timeout: 30000 });
  assert.equal(await webview().locator('#summary-tensors').getAttribute('data-value'), '21');
  await panelShot('panel-census');
});

uiTest('UNMERGE: a mask from the palette, then the decomposition of the fine-tuned model into the dictionary', async () => {
  await palette('View: Close All Editors');
  await palette('LoRA Lens: Build UNMERGE Mask…');
  await pick('Base model folder', 'tiny-llama');
  // Several adapters can be picked: tick the one there is, then accept.
  await pick('Adapters of the dictionary', 'tiny-llama-qv');
  await quickInput().locator('.quick-input-box input').press('Enter');
  await asked('Parameter budget');
  const budget = quickInput().locator('.quick-input-box input');
  await budget.fill('2000');
  await budget.press('Enter');
  await acceptInput('tiny-llama-unmerge-mask');
  let wv = webview();
  await wv.locator('#panel[data-kind="mask"][data-state="ready"]').waitFor({ timeout: 60000 });
  assert.equal(await wv.locator('#summary-modules').getAttribute('data-value'), '4');
  assert.equal(await wv.locator('#summary-k').getAttribute('data-value'), '500');
  await panelShot('panel-mask');

  await palette('View: Close All Editors');
  await palette('LoRA Lens: Decompose Merged Model…');
  await pick('Merged model to decompose', 'tiny-llama-finetuned');
  await pick('Base model folder', 'tiny-llama');
  await pick('UNMERGE mask folder', 'tiny-llama-unmerge-mask'); // remembered from the mask job
  await asked('Adapters of the dictionary');
  await quickInput().locator('.quick-input-box input').press('Enter'); // the dictionary, preselected from the mask job
  await pick('Decomposition method', 'nnls');
  wv = webview();
  await wv.locator('#panel[data-kind="decompose"][data-state="ready"]').waitFor({ timeout: 60000 });
  const c = Number(await wv.locator('tr#coefficient-tiny-llama-qv [data-key=coefficient]').getAttribute('data-value'));
  assert.ok(Math.abs(c - 1) < 1e-3, `coefficient ${c}`);
  await panelShot('panel-decompose');
});

uiTest('Merge and Estimate from the adapter folder\'s context menu', async () => {
  await palette('View: Close All Editors');
  await showContainer('Explorer'); // adapters is still expanded from the third test
  await clickMenuItem(await contextMenu('tiny-llama-qv', 'Merge LoRA Adapter…'));
  await pick('Base model folder', 'tiny-llama');
  await pick('Merged dtype', 'bf16');
  await pick('Rounding rule for bf16', 'peft');
  const out = await acceptInput('tiny-llama-qv-merged-bf16');
  const merged = page.locator('.notification-toast', { hasText: `Merged tiny-llama-qv into ${out}` });
  await merged.waitFor({ timeout: 60000 });
  // The merged folder holds the model and the output marker by which a re-run may replace it (issue 10's output policy).
  assert.deepEqual(fs.readdirSync(out).sort(), ['.lora-lens-output.json', 'config.json', 'model.safetensors']);
  assert.equal(JSON.parse(fs.readFileSync(path.join(out, 'config.json'), 'utf8')).torch_dtype, 'bfloat16');
  // The next step: compare the adapter with this bf16 merge, which is an expected loss, not a failure.
  await merged.locator('.monaco-button', { hasText: 'Validate This Merge' }).click();
  await acceptInput('tiny-llama-qv-compare');
  const bf16Panel = webview();
  await bf16Panel.locator('#panel[data-kind="compare"][data-state="ready"]').waitFor({ timeout: 60000 });
  assert.equal(await bf16Panel.locator('#summary-dtype-verdict').getAttribute('data-value'), 'EXPECTED-LOSS');
  assert.equal(await bf16Panel.locator('#summary-merged-dtype').getAttribute('data-value'), 'bf16');
  assert.equal(await bf16Panel.locator('#summary-equivalent').getAttribute('data-value'), 'false', 'the strict verdict is kept');
  assert.match(await bf16Panel.locator('#verdict').innerText(), /^EXPECTED LOSS at bf16/);
  assert.equal(await bf16Panel.locator('#verdict').getAttribute('data-tone'), 'warn');
  assert.match(await bf16Panel.locator('#panel-title').innerText(), /merged\/fine-tuned model tiny-llama-qv-merged-bf16/);
  await shot('panel-compare-bf16');
  await palette('Notifications: Clear All Notifications');
  await palette('View: Close All Editors');
  await showContainer('Explorer');

  await clickMenuItem(await contextMenu('tiny-llama-qv', 'Estimate LoRA Parameters…'));
  await pick('Base model folder', 'tiny-llama');
  // r (in + out) per targeted module: 4 x (64 + 64) x 4 modules.
  await toast('LoRA trainable parameters: 2,048').waitFor({ timeout: 30000 });
  // The job's progress notification goes away once the job is done.
  await page.locator('.notification-toast', { hasText: 'Estimating LoRA parameters on tiny-llama' }).waitFor({ state: 'hidden', timeout: 10000 });
  await shot('estimate');
});

uiTest('light theme: panels, viewer and tree take the theme\'s colours, and charts redraw when it changes', async () => {
  // The census panel is drawn in the dark theme; switch the theme under it.
  await palette('View: Close All Editors');
  await showContainer('LoRA Lens');
  await censusRow('tiny-llama').hover();
  await censusRow('tiny-llama').locator('.action-label[aria-label="Show Census Charts"]').click();
  const wv = webview();
  await wv.locator('#panel[data-kind="census"][data-state="ready"]').waitFor({ timeout: 30000 });
  assert.ok(luminance(await chartPixel('categories')) < 0.3, 'dark chart background first');
  await palette('Preferences: Color Theme');
  await quickInput().locator('.quick-input-box input').fill('Light Modern');
  await quickInput().locator('.monaco-list-row').filter({ has: page.locator('.label-name', { hasText: /^Light Modern$/ }) }).first().click();
  await page.locator('.monaco-workbench.vs:not(.vs-dark)').waitFor({ timeout: 30000 });
  await wv.locator('body.vscode-light').waitFor({ timeout: 20000 });
  let px = [0, 0, 0, 0];
  for (let i = 0; i < 50 && luminance(px) < 0.8; i++) {
    px = await chartPixel('categories');
    await new Promise((r) => setTimeout(r, 100));
  }
  assert.ok(luminance(px) >= 0.8, `the chart was redrawn on a light background: ${px}`);
  const colours = await wv.locator('#panel-title').evaluate((h) => [getComputedStyle(h).color, getComputedStyle(document.body).backgroundColor]);
  const rgb = (c) => c.match(/\d+(\.\d+)?/g).slice(0, 3).map(Number);
  assert.ok(luminance(rgb(colours[0])) < 0.4 && luminance(rgb(colours[1])) > 0.8, `dark text on a light page: ${colours}`);
  await panelShot('panel-census-light');

  await palette('View: Close All Editors');
  await palette('LoRA Lens: Analyze Merge Precision…');
  await pick('LoRA adapter folder', 'tiny-llama-qv');
  await pick('Base model folder', 'tiny-llama');
  await wv.locator('#panel[data-kind="precision"][data-state="ready"]').waitFor({ timeout: 90000 });
  await panelShot('panel-precision-light');

  await palette('View: Close All Editors');
  await showContainer('Explorer');
  await expandExplorer('models');
  await expandExplorer('tiny-llama');
  await explorerRow('model.safetensors').first().click();
  await wv.locator('#panel[data-kind="weights"][data-state="ready"]').waitFor({ timeout: 30000 });
  const verdict = await wv.locator('#verdict').evaluate((v) => getComputedStyle(v).color);
  assert.ok(luminance(rgb(verdict)) < 0.4, `the verdict reads on a light page: ${verdict}`);
  await panelShot('safetensors-viewer-light');
  // The viewer's per-tensor Statistics: the tensor's values, drawn in the light theme.
  await wv.locator('#table-tensors tr', { hasText: 'model.layers.0.self_attn.q_proj.weight' }).locator('button.row-action').click();
  await pick('Statistics of self_attn.q_proj.weight', 'Its values');
  // The panel opens beside the viewer; with the viewer closed, the page holds one webview again.
  const frames = page.locator(`iframe.webview.ready[src*="extensionId=${EXT_ID}"]`);
  await page.waitForFunction((sel) => document.querySelectorAll(sel).length === 2, `iframe.webview.ready[src*="extensionId=${EXT_ID}"]`, { timeout: 60000 });
  const viewerTab = page.locator('.tabs-container .tab', { hasText: 'model.safetensors' }).first();
  await viewerTab.hover();
  await viewerTab.locator('.action-label.codicon-close').click();
  await page.waitForFunction((sel) => document.querySelectorAll(sel).length === 1, `iframe.webview.ready[src*="extensionId=${EXT_ID}"]`, { timeout: 20000 });
  assert.equal(await frames.count(), 1);
  await page.mouse.move(1000, 600); // off the tab, whose tooltip would cover the panel's title
  await wv.locator('#panel[data-kind="stats"][data-state="ready"]').waitFor({ timeout: 60000 });
  assert.match(await wv.locator('#panel-title').innerText(), /^Statistics: model\.layers\.0\.self_attn\.q_proj\.weight \(tiny-llama\/model\)$/);
  await panelShot('panel-stats-light');
  await showContainer('LoRA Lens');
  await shot('census-tree-light');
});

uiTest('high contrast: panels, tree and viewer read in the high-contrast themes', async () => {
  for (const [theme, cls, suffix] of [['Dark High Contrast', '.monaco-workbench.hc-black', 'hc'], ['Light High Contrast', '.monaco-workbench.hc-light', 'hc-light']]) {
    await palette('View: Close All Editors');
    await palette('Preferences: Color Theme');
    await quickInput().locator('.quick-input-box input').fill(theme);
    await quickInput().locator('.monaco-list-row').filter({ has: page.locator('.label-name', { hasText: new RegExp(`^${theme}$`) }) }).first().click();
    await page.locator(cls).waitFor({ timeout: 30000 });
    await showContainer('LoRA Lens');
    await censusRow('tiny-llama').hover();
    await censusRow('tiny-llama').locator('.action-label[aria-label="Show Census Charts"]').click();
    await webview().locator('#panel[data-kind="census"][data-state="ready"]').waitFor({ timeout: 30000 });
    await webview().locator('body.vscode-high-contrast, body.vscode-high-contrast-light').waitFor({ timeout: 20000 });
    await panelShot(`panel-census-${suffix}`);
    await palette('View: Close All Editors');
    await tensorStatsFromTree();
    await pick('Statistics of self_attn.q_proj.weight', 'ΔW of tiny-llama-qv');
    await webview().locator('#panel[data-kind="stats"][data-state="ready"]').waitFor({ timeout: 60000 });
    await panelShot(`panel-stats-${suffix}`);
  }
});

// The low-rank toolbox (issue 13). Each test stands on the fixtures alone (and on the outputs of the
// low-rank tests before it), so `node --test --test-name-pattern="low-rank" e2e.test.mjs` runs them alone.
const menuEntry = (entry) => page.locator('.context-view .monaco-menu .action-label', { hasText: entry });

uiTest('low-rank: Spectrum of Adapter from the Explorer draws singular values, energy curves and the energyRank99 heat map', async () => {
  await palette('View: Close All Editors');
  await palette('Preferences: Color Theme'); // the README's screenshot is of the dark theme
  await quickInput().locator('.quick-input-box input').fill('Dark Modern');
  await quickInput().locator('.monaco-list-row').filter({ has: page.locator('.label-name', { hasText: /^Dark Modern$/ }) }).first().click();
  await page.locator('.monaco-workbench.vs-dark:not(.hc-black)').waitFor({ timeout: 30000 });
  await showContainer('Explorer');
  await expandExplorer('adapters');
  const item = await contextMenu('tiny-llama-r8', 'Spectrum of Adapter…');
  for (const entry of ['Resize Adapter…', 'Combine Adapters…']) assert.equal(await menuEntry(entry).count(), 1, entry);
  assert.equal(await menuEntry('Extract LoRA from Two Models…').count(), 0, 'a model action');
  await clickMenuItem(item);
  const wv = webview();
  await wv.locator('#panel[data-kind="spectrum"][data-state="ready"]').waitFor({ timeout: 60000 });
  // A .safetensors file gets it too (a kohya or LyCORIS file is an adapter on its own), a model's weights do not.
  const fileMenu = async (row) => {
    await row.click({ button: 'right' });
    await page.locator('.context-view .monaco-menu').waitFor({ timeout: 10000 });
    const n = await menuEntry('Spectrum of Adapter…').count();
    await page.keyboard.press('Escape');
    return n;
  };
  await expandExplorer('tiny-llama-r8');
  assert.equal(await fileMenu(explorerRow('adapter_model.safetensors').last()), 1, 'an adapter file');
  await expandExplorer('models');
  await expandExplorer('tiny-llama');
  assert.equal(await fileMenu(explorerRow('model.safetensors').first()), 0, 'a model file');
  // Rank 8 on the seven projections of two layers; `lora-lens spectrum` on it finds 69 of the 112 ranks hold 99%.
  assert.equal(await wv.locator('#summary-modules').getAttribute('data-value'), '14');
  assert.equal(await wv.locator('#summary-total-rank').getAttribute('data-value'), '112');
  assert.equal(await wv.locator('#summary-energy-rank99').getAttribute('data-value'), '69');
  assert.equal(await wv.locator('canvas#chart-singular-values').getAttribute('data-points'), '112', 'every singular value');
  assert.equal(await wv.locator('canvas#chart-energy').getAttribute('data-points'), String(7 * 8 + 8), 'a mean per projection and the least, at ranks 1 to 8');
  assert.equal(await wv.locator('#table-energy-rank-layers tbody tr').count(), 2, 'one row per layer');
  const kinds = await wv.locator('#table-energy-rank-layers thead th').allInnerTexts();
  assert.deepEqual(kinds.slice(1).sort(), ['down_proj', 'gate_proj', 'k_proj', 'o_proj', 'q_proj', 'up_proj', 'v_proj']);
  const cell = (layer, kind) => wv.locator(`#table-energy-rank-layers tbody tr:nth-child(${layer + 1}) td[data-key="${kind}"]`);
  assert.equal(await cell(0, 'q_proj').getAttribute('data-value'), '2', 'q_proj decays fastest');
  assert.equal(await cell(0, 'down_proj').getAttribute('data-value'), '8', 'down_proj uses its whole rank');
  assert.equal(await wv.locator('#table-modules tbody tr').count(), 14);
  await panelShot('panel-spectrum');
});

let resized;
uiTest('low-rank: Resize from the palette shows error and size per candidate first, writes into lora-lens-out and opens the result in the census', async () => {
  await palette('View: Close All Editors');
  await palette('LoRA Lens: Resize Adapter…');
  await pick('LoRA adapter folder', 'tiny-llama-r8');
  await asked('Resize tiny-llama-r8 (rank 8)');
  const rows = quickInput().locator('.monaco-list-row');
  await rows.first().waitFor();
  const texts = await rows.allInnerTexts();
  // Rank presets 1 to 8 (8 changes nothing), the energy presets, then any rank.
  assert.ok(texts.some((t) => /^rank 8/.test(t) && /no module loses rank/.test(t)), texts.join('\n---\n'));
  const r4 = texts.find((t) => /^rank 4/.test(t));
  assert.ok(r4, texts.join('\n---\n'));
  const predicted = { error: /largest relative error (\S+)/.exec(r4)[1], params: /([\d,]+) parameters/.exec(r4)[1] };
  // r (in + out) per module: four 64×64 attention projections and three 64/128 MLP ones, two layers.
  assert.equal(predicted.params, (4 * 2 * (4 * 128 + 3 * 192)).toLocaleString('en-US'));
  assert.ok(texts.some((t) => /^energy 99\.0%/.test(t) && /ranks \d–8/.test(t)), 'energy presets give a rank per module');
  assert.ok(texts.some((t) => t.includes('Another rank…')));
  await shot('resize-preview');
  await pick('Resize tiny-llama-r8', 'rank 4');
  resized = await acceptInput('tiny-llama-r8-resized-r4');
  const wv = webview();
  await wv.locator('#panel[data-kind="resize"][data-state="ready"]').waitFor({ timeout: 60000 });
  // What the preview said is what was written.
  assert.equal(await wv.locator('#summary-max-rel-error').innerText(), predicted.error);
  assert.equal(await wv.locator('#summary-params').innerText(), predicted.params);
  assert.deepEqual(fs.readdirSync(resized).sort(), ['.lora-lens-output.json', 'adapter_config.json', 'adapter_model.safetensors']);
  await panelShot('panel-resize');
  // The resized adapter is in the census; its own spectrum is one right-click away there.
  await palette('View: Close All Editors');
  await showContainer('LoRA Lens');
  const row = censusRow('tiny-llama-r8-resized-r4');
  await row.waitFor({ timeout: 30000 });
  await row.click({ button: 'right' });
  await clickMenuItem(menuEntry('Spectrum of Adapter…'));
  await wv.locator('#panel-title', { hasText: 'Spectrum: tiny-llama-r8-resized-r4' }).waitFor({ timeout: 60000 });
  assert.equal(await wv.locator('#summary-total-rank').getAttribute('data-value'), String(4 * 14));
  // Another rank: what it would do follows the typed value, before anything is written.
  await palette('LoRA Lens: Resize Adapter…');
  await pick('LoRA adapter folder', 'tiny-llama-r8');
  await asked('Resize tiny-llama-r8');
  await quickInput().locator('.monaco-list-row', { hasText: 'Another rank…' }).click();
  await asked('Rank of every module (at most 8)');
  await quickInput().locator('.quick-input-box input').fill('4');
  await quickInput().locator('.quick-input-message', { hasText: `largest relative error ${predicted.error}` }).waitFor({ timeout: 10000 });
  await quickInput().locator('.quick-input-box input').fill('9');
  await quickInput().locator('.quick-input-message', { hasText: 'a whole number from 1 to 8' }).waitFor({ timeout: 10000 });
  await page.keyboard.press('Escape');
});

let extracted;
uiTest('low-rank: Extract LoRA from the fine-tuned model\'s context menu captures its delta and opens it in the census', async () => {
  await palette('View: Close All Editors');
  await showContainer('Explorer');
  await expandExplorer('models');
  await clickMenuItem(await contextMenu('tiny-llama-finetuned', 'Extract LoRA from Two Models…'));
  await pick('What is tiny-llama-finetuned?', 'The fine-tuned (or merged) model');
  await pick('Base model folder', 'tiny-llama');
  await pick('Rank of the extracted LoRA', 'rank 4');
  extracted = await acceptInput('tiny-llama-finetuned-lora-r4');
  const wv = webview();
  await wv.locator('#panel[data-kind="extract-lora"][data-state="ready"]').waitFor({ timeout: 90000 });
  // The fine-tuned model is the base plus a rank-4 delta on q and v of both layers, in fp32.
  assert.equal(await wv.locator('#summary-modules').getAttribute('data-value'), '4');
  assert.equal(await wv.locator('#summary-not-captured').getAttribute('data-value'), '0');
  assert.ok(Number(await wv.locator('#summary-mean-energy-kept').getAttribute('data-value')) > 0.9999);
  assert.ok(Number(await wv.locator('#summary-max-rel-error').getAttribute('data-value')) < 1e-3);
  assert.equal(await wv.locator('#table-energy-captured tbody tr').count(), 4);
  await panelShot('panel-extract-lora');
  await showContainer('LoRA Lens');
  await censusRow('tiny-llama-finetuned-lora-r4').waitFor({ timeout: 30000 });
});

uiTest('low-rank: Combine two adapters selected in the Explorer; adapters of different bases are refused in one line', async () => {
  await palette('View: Close All Editors');
  await showContainer('Explorer');
  await expandExplorer('lora-lens-out');
  await explorerRow('tiny-llama-r8-resized-r4').click();
  await explorerRow('tiny-llama-qv').click({ modifiers: ['Control'] });
  await clickMenuItem(await contextMenu('tiny-llama-qv', 'Combine Adapters…'));
  await asked('Weights wᵢ of');
  await acceptInput('1,1');
  await pick('Rank of the combined adapter', 'Exact');
  const out = await acceptInput('-combined');
  const wv = webview();
  await wv.locator('#panel[data-kind="combine"][data-state="ready"]').waitFor({ timeout: 60000 });
  assert.equal(await wv.locator('#summary-adapters').getAttribute('data-value'), '2');
  assert.equal(await wv.locator('#table-inputs tbody tr').count(), 2);
  // Exact: a module's rank is the sum of its ranks in the adapters adapting it: 4 + 4 for q and v, 4 elsewhere.
  const ranks = Object.fromEntries(await wv.locator('#table-combine-ranks tbody tr').evaluateAll((trs) => trs.map((tr) => [tr.querySelector('th').textContent, Number(tr.querySelector('td[data-key="rank"]').dataset.value)])));
  assert.equal(Object.keys(ranks).length, 14, JSON.stringify(ranks));
  for (const [m, r] of Object.entries(ranks)) assert.equal(r, /\.(q|v)_proj$/.test(m) ? 8 : 4, m);
  assert.ok(fs.existsSync(path.join(out, 'adapter_model.safetensors')));
  await panelShot('panel-combine');
  await showContainer('LoRA Lens');
  await censusRow(path.basename(out)).waitFor({ timeout: 30000 });

  // The extracted LoRA names the base by its path, the fixture's adapter by 'tiny-llama': the engine's one line, as an error toast.
  await palette('View: Close All Editors');
  await palette('LoRA Lens: Combine Adapters…');
  await pick('Adapters to combine', 'tiny-llama-qv'); // nothing preselected: the Explorer's selection was not asked
  await pick('Adapters to combine', 'tiny-llama-finetuned-lora-r4');
  await quickInput().locator('.quick-input-box input').press('Enter');
  await asked('Weights wᵢ of');
  await acceptInput('1,1');
  await pick('Rank of the combined adapter', 'Exact');
  await page.waitForFunction(() => document.querySelector('.quick-input-widget .quick-input-box input')?.value.endsWith('-combined'), null, { timeout: 10000 });
  const bad = path.join(ws, 'lora-lens-out', 'not-combined');
  await quickInput().locator('.quick-input-box input').fill(bad);
  await quickInput().locator('.quick-input-box input').press('Enter');
  const error = page.locator('.notification-toast', { hasText: 'adapters of different bases cannot be combined' });
  await error.waitFor({ timeout: 60000 });
  const message = await error.locator('.notification-list-item-message').innerText();
  assert.match(message, /^LoRA Lens combine: .*made for base '.*' but .* for '.*': adapters of different bases cannot be combined$/);
  assert.ok(!message.includes('\n') && !/\bat .*\.js:\d+/.test(message), `one line, no stack: ${message}`);
  assert.ok(!fs.existsSync(bad), 'nothing written');
  await shot('combine-bad-input');
  await palette('Notifications: Clear All Notifications');
});

uiTest('Try the Demo writes the demo checkpoints into the workspace and opens them in the census', async () => {
  await palette('View: Close All Editors');
  await palette('LoRA Lens: Try the Demo');
  await toast('The demo wrote a StarCoder2-shaped model').waitFor({ timeout: 180000 });
  const demo = path.join(ws, 'lora-lens-demo');
  for (const d of ['base', 'adapter']) assert.ok(fs.existsSync(path.join(demo, d)), d);
  await showContainer('LoRA Lens');
  await censusRow(/^base$/).waitFor({ timeout: 30000 });
  const base = (await censusItems()).find((i) => i.label === 'base');
  assert.match(base.description, /483 tensors/, JSON.stringify(base));
  await palette('Notifications: Clear All Notifications');
});

uiTest('an adapter folder moved into the workspace from outside VS Code (one rename) is recognised: the adapter actions appear', async () => {
  await palette('View: Close All Editors');
  // A checkpoint folder moved in whole is one watcher event for the folder, none for its marker files.
  const outside = path.join(tmp, 'outside-adapter');
  fs.cpSync(fx.adapter, outside, { recursive: true });
  fs.renameSync(outside, path.join(ws, 'adapters', 'moved-in'));
  await showContainer('Explorer');
  await expandExplorer('adapters');
  await contextMenu('moved-in', 'Merge LoRA Adapter…');
  await page.keyboard.press('Escape');
});

// The installed .vsix as a user has it (E2E_VSIX), run outside VS Code: a platform .vsix carries Dawn beside
// its bundles, so its engine finds the GPU with --device auto and no node_modules (run-tests.mjs gives it
// lavapipe's environment); the generic .vsix carries none and computes on the CPU.
test('the installed extension\'s engine: a platform .vsix finds the GPU with --device auto, the generic one stays on the CPU',
  { skip: process.env.E2E_VSIX ? false : 'tests an installed .vsix (set E2E_VSIX)' }, () => {
    const extensions = path.join(tmp, 'extensions');
    const dir = fs.readdirSync(extensions).find((d) => d.toLowerCase().startsWith(`${EXT_ID}-`));
    assert.ok(dir, `the .vsix is installed in ${extensions}`);
    const installed = path.join(extensions, dir);
    assert.ok(!fs.existsSync(path.join(installed, 'node_modules')), 'a plain install has no node_modules');
    const dawn = path.join(installed, 'dist', 'dawn', `${process.platform}-${process.arch}`, 'dawn.node');
    const report = path.join(tmp, 'installed-device.json');
    execFileSync(process.execPath, [path.join(installed, 'dist', 'cli.js'), 'precision', '--base', fx.base, '--adapter', fx.adapter, '--dtypes', 'fp16', '--json', report, '--device', 'auto'],
      { env: { ...env(), ...JSON.parse(process.env.E2E_GPU_ENV ?? '{}'), LORA_LENS_ALLOW_SOFTWARE_GPU: '1' }, stdio: 'pipe' });
    const { device } = JSON.parse(fs.readFileSync(report, 'utf8'));
    if (fs.existsSync(dawn)) assert.doesNotMatch(device, /^CPU/, `the platform .vsix's engine found no GPU: ${device}`);
    else assert.match(device, /^CPU/, 'the generic .vsix computes on the CPU');
  });
