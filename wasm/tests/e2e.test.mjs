// End-to-end test of the annotation tool in headless Chromium (Debian's
// /usr/bin/chromium driven by playwright-core): serve wasm/ on localhost, load
// the fixture model by URL and a sample JSONL file, wait for the scores,
// compare the shown values with the native CLI's, label with the keyboard,
// reload (work must survive), export and check the exported file. Saves a
// screenshot and the renderer's peak memory under target/wasm-e2e/.
// Threads: the page served with COOP/COEP is cross-origin isolated and scores
// on a pool of Web Workers; 2 threads run in parallel (at least 1.3x the
// pairs/s of 1 thread; the 1.7x target is measured by
// wasm/benches/browser_compare.mjs), with the same scores. Served without those headers it falls
// back to one thread and says so.
import assert from 'node:assert/strict';
import { readFileSync, readdirSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Worker } from 'node:worker_threads';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

import { FIELDS, fieldTolerance, fixtures, modelPath, nativeScores, requireFile, root, samplePairs } from './common.mjs';
import { serve } from '../serve.mjs';

const TOL = 1e-4;
const e2eDir = join(root, 'target', 'wasm-e2e');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';

// Three real Alpaca pairs and one in prompt/response form.
const lines = [...samplePairs(3, 300), JSON.stringify({ prompt: 'What is the capital of France?', response: 'The capital of France is Paris.' })];

let server;
let base;
let browser;
let plainServer;
let plainBase;

before(async () => {
  requireFile(join(root, 'wasm', 'pkg', 'main_wasm.js'), 'run scripts/build-wasm');
  requireFile(modelPath, 'run scripts/fetch-fixtures');
  mkdirSync(e2eDir, { recursive: true });
  ({ server, url: base } = await serve({ port: 0, fixtures }));
  ({ server: plainServer, url: plainBase } = await serve({ port: 0, fixtures, isolate: false }));
  browser = await chromium.launch({
    executablePath: requireFile(chromiumPath, 'install it: apt-get install -y chromium'),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
});

after(async () => {
  await browser?.close();
  server?.close();
  plainServer?.close();
});

/** Resident memory now (VmRSS) and at its peak (VmHWM), bytes, of each live Chromium renderer process by pid. */
function rendererMemory() {
  const out = new Map();
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!cmd.includes('chromium') || !cmd.includes('--type=renderer')) continue;
      const status = readFileSync(`/proc/${pid}/status`, 'utf8');
      const kb = (key) => Number(new RegExp(`${key}:\\s+(\\d+) kB`).exec(status)[1]) * 1024;
      out.set(pid, { rss: kb('VmRSS'), hwm: kb('VmHWM') });
    } catch {
      // The process ended between listing and reading.
    }
  }
  return out;
}

test('annotate in the browser: load, score, compare with native, label, reload, export', async () => {
  const native = nativeScores(lines, 'e2e-pairs').scores;
  const samplePath = join(e2eDir, 'sample.jsonl');
  writeFileSync(samplePath, lines.join('\n') + '\n');

  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 1100 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(`${base}/www/`);
  await page.waitForSelector('body[data-worker="ready"]');
  assert.equal(await page.evaluate(() => crossOriginIsolated), true, 'the page is cross-origin isolated');
  // What Chromium itself holds for this page (and the wasm module, compiled), before any model.
  const baseline = rendererMemory();

  // Model by URL, then the pairs file.
  await page.fill('#model-url', '/fixtures/SmolLM2-135M-Instruct.Q4_1.gguf');
  await page.click('#model-load');
  await page.waitForSelector('body[data-model="ready"]', { timeout: 120_000 });
  assert.match(await page.textContent('#model-status'), /Model ready: 30 layers/);
  await page.setInputFiles('#pairs-file', samplePath);
  await page.waitForSelector('body[data-scoring="done"]', { timeout: 300_000 });
  assert.equal(await page.textContent('#errors'), '', 'no errors shown');

  // Shown values: the 3-decimal text and the full value behind it, against the CLI.
  const rows = await page.$$eval('#pairs tbody tr', (trs) =>
    trs.map((tr) => ({
      alignment: tr.querySelector('.alignment').textContent,
      fwd: tr.querySelector('.fwd').textContent,
      rev: tr.querySelector('.rev').textContent,
      data: { alignment: Number(tr.dataset.alignment), fwdPmi: Number(tr.dataset.fwd), revPmi: Number(tr.dataset.rev) },
    })),
  );
  assert.equal(rows.length, lines.length);
  rows.forEach((r, i) => {
    const n = native[i];
    assert.equal(r.alignment, n.alignment.toFixed(3), `row ${i + 1} alignment shown`);
    assert.equal(r.fwd, n.fwd_pmi.toFixed(3), `row ${i + 1} forward shown`);
    assert.equal(r.rev, n.rev_pmi.toFixed(3), `row ${i + 1} reverse shown`);
    for (const [snake, camel] of FIELDS.slice(0, 3)) assert.ok(Math.abs(r.data[camel] - n[snake]) <= TOL, `row ${i + 1} ${camel}: ${r.data[camel]} vs ${n[snake]}`);
  });

  // The heat map of the selected (first) pair: one span per response token.
  await page.waitForSelector('#response span');
  const nTokens = await page.$$eval('#response span', (s) => s.length);
  assert.equal(nTokens, native[0].response_tokens, 'one coloured span per response token');
  // Each token is painted by its difference: a valid colour, white only near 0.
  const painted = await page.$$eval('#response span', (spans) => spans.map((s) => [Number(s.dataset.pmi), s.style.backgroundColor]));
  for (const [pmi, colour] of painted) {
    assert.match(colour, /^rgb\(\d+, \d+, \d+\)$/, `token with difference ${pmi} has colour '${colour}'`);
    if (Math.abs(pmi) > 0.5) assert.notEqual(colour, 'rgb(255, 255, 255)');
  }
  native[0].response_detail.forEach((t, j) => assert.ok(Math.abs(painted[j][0] - t.pmi) <= TOL, `token ${j} difference`));
  const instrTokens = await page.$$eval('#instruction span', (s) => s.length);
  assert.equal(instrTokens, native[0].instruction_tokens);

  // Label with the keyboard: a (pair 1), r (pair 2), k back to 2, s (pair 2 -> skip), then note on pair 3 and accept.
  await page.locator('#pairs tbody tr').first().focus();
  await page.keyboard.press('a');
  await page.keyboard.press('r');
  await page.keyboard.press('k');
  await page.keyboard.press('s');
  await page.keyboard.press('n');
  await page.keyboard.type('clear answer');
  await page.keyboard.press('Escape');
  await page.keyboard.press('a');
  const labels = await page.$$eval('#pairs tbody tr .label', (tds) => tds.map((td) => td.textContent));
  assert.deepEqual(labels, ['accept', 'skip', 'accept', '']);

  // Sorting by alignment (descending) reorders the rows by the shown value.
  await page.click('th button[data-sort="alignment"]');
  const sorted = await page.$$eval('#pairs tbody tr', (trs) => trs.map((tr) => Number(tr.dataset.alignment)));
  assert.deepEqual(sorted, [...sorted].sort((a, b) => b - a));
  await page.click('th button[data-sort="index"]');

  // The reverse model's guess, on request.
  await page.keyboard.press('g');
  await page.waitForFunction(() => !document.getElementById('guess').disabled, null, { timeout: 120_000 });
  const guess = await page.textContent('#guess-out');
  assert.ok(guess.length > 0 && guess !== 'Thinking…', `a guessed instruction: ${guess}`);

  await page.screenshot({ path: join(e2eDir, 'screenshot.png'), fullPage: true });
  const wasmBytes = Number(await page.getAttribute('body', 'data-wasm-bytes'));
  // The renderer that grew most holds the page and its worker.
  const [pid, peak, added] = [...rendererMemory()]
    .map(([pid, m]) => [pid, m.hwm, m.hwm - (baseline.get(pid)?.rss ?? 0)])
    .sort((a, b) => b[2] - a[2])[0];

  // Work survives a reload (scores, labels, note), without the model.
  await page.waitForTimeout(300); // the debounced save
  await page.reload();
  await page.waitForSelector('#pairs tbody tr');
  const after = await page.$$eval('#pairs tbody tr', (trs) => trs.map((tr) => [tr.querySelector('.label').textContent, tr.querySelector('.alignment').textContent]));
  assert.deepEqual(after.map((r) => r[0]), ['accept', 'skip', 'accept', '']);
  assert.deepEqual(after.map((r) => r[1]), native.map((n) => n.alignment.toFixed(3)));

  // Export and check the file.
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#export')]);
  const exportedPath = join(e2eDir, 'annotated.jsonl');
  await download.saveAs(exportedPath);
  const exported = readFileSync(exportedPath, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(exported.length, lines.length);
  exported.forEach((r, i) => {
    const input = JSON.parse(lines[i]);
    for (const [k, v] of Object.entries(input)) assert.deepEqual(r[k], v, `record ${i + 1} keeps its field ${k}`);
    for (const [snake] of FIELDS) assert.ok(Math.abs(r.alignment[snake] - native[i][snake]) <= fieldTolerance(snake, native[i], TOL), `record ${i + 1} ${snake}`);
    assert.equal(r.alignment.response_tokens, native[i].response_tokens);
  });
  assert.deepEqual(exported.map((r) => r.annotation.label), ['accept', 'skip', 'accept', null]);
  assert.deepEqual(exported.map((r) => r.annotation.note), ['', '', 'clear answer', '']);
  assert.deepEqual(pageErrors, []);

  const fileBytes = Number(readFileSync(modelPath).length);
  const report = {
    modelFileBytes: fileBytes,
    wasmMemoryBytes: wasmBytes,
    rendererPid: Number(pid),
    rendererBaselineRssBytes: baseline.get(pid)?.rss ?? null,
    rendererPeakRssBytes: peak,
    addedByToolBytes: added,
    addedRatio: added / fileBytes,
  };
  writeFileSync(join(e2eDir, 'memory.json'), JSON.stringify(report, null, 2) + '\n');
  const mb = (b) => `${(b / 1e6).toFixed(1)} MB`;
  console.log(`# memory: model file ${mb(fileBytes)}; wasm memory ${mb(wasmBytes)}; renderer RSS ${mb(report.rendererBaselineRssBytes)} before the model, peak ${mb(peak)}: the tool added ${mb(added)} = ${report.addedRatio.toFixed(2)}x the file`);
  console.log(`# screenshot: ${join(e2eDir, 'screenshot.png')}`);
  assert.ok(wasmBytes < 2 * fileBytes, `wasm memory ${mb(wasmBytes)} under 2x the model file`);
  assert.ok(added < 2 * fileBytes, `peak memory the tool added (${mb(added)}) under 2x the model file`);
  await context.close();
});

/** Loads the fixture model by URL in a fresh page of `origin`; resolves to the page. */
async function pageWithModel(context, origin, pageErrors) {
  const page = await context.newPage();
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  page.on('dialog', (d) => d.accept()); // "Clear all" asks first
  await page.goto(`${origin}/www/`);
  await page.waitForSelector('body[data-worker="ready"]');
  await page.fill('#model-url', '/fixtures/SmolLM2-135M-Instruct.Q4_1.gguf');
  await page.click('#model-load');
  await page.waitForSelector('body[data-model="ready"]', { timeout: 120_000 });
  return page;
}

/** Clears the list, opens the JSONL `lines` as a file and waits for their scores. */
async function scoreAll(page, lines, name) {
  const path = join(e2eDir, `${name}.jsonl`);
  writeFileSync(path, lines.join('\n') + '\n');
  await page.click('#clear');
  await page.evaluate(() => delete document.body.dataset.scoring); // the last run's
  await page.setInputFiles('#pairs-file', path);
  await page.waitForSelector('body[data-scoring="done"]', { timeout: 300_000 });
  const body = await page.$eval('body', (b) => ({ ...b.dataset }));
  const rows = await page.$$eval('#pairs tbody tr', (trs) => trs.map((tr) => [Number(tr.dataset.alignment), Number(tr.dataset.fwd), Number(tr.dataset.rev)]));
  return { pairsPerSecond: Number(body.pairsPerSecond), threads: Number(body.scoreThreads), rows, status: await page.textContent('#score-status') };
}

/// How many cores' worth of work the machine gives two busy threads now,
/// against one alone (2.0 on an idle 2-core machine): a shared or throttled
/// machine cannot show any program scaling, ours included.
async function machineScaling() {
  const spin = (ms) => new Promise((resolve) => {
    const w = new Worker(`const { parentPort } = require('node:worker_threads');
      const end = Date.now() + ${ms}; let n = 0, x = 0;
      while (Date.now() < end) { for (let i = 0; i < 10000; i++) x += Math.sqrt(i + n); n++; }
      parentPort.postMessage(n);`, { eval: true });
    w.on('message', (n) => { resolve(n); w.terminate(); });
  });
  const one = await spin(1000);
  const two = (await Promise.all([spin(1000), spin(1000)])).reduce((a, b) => a + b, 0);
  return two / one;
}

test('threads: the isolated page scores on every core in parallel, same scores', async (t) => {
  // Short real pairs: the runs measure throughput, the scores are checked too.
  const speedLines = samplePairs(6, 400);
  const native = nativeScores(speedLines, 'e2e-threads').scores;
  const context = await browser.newContext();
  const pageErrors = [];
  const page = await pageWithModel(context, base, pageErrors);
  const body = await page.$eval('body', (b) => ({ ...b.dataset }));
  assert.equal(body.isolated, 'true');
  const pool = Number(body.poolThreads);
  assert.equal(pool, await page.evaluate(() => navigator.hardwareConcurrency), 'one pool thread per core');
  assert.equal(Number(body.threads), pool, 'scorers use the whole pool by default');
  assert.match(await page.textContent('#threads-status'), new RegExp(`Scoring on ${pool} thread`));
  if (pool < 2) {
    t.skip(`this browser reports ${pool} core: no second thread to measure`);
    return;
  }
  const best = new Map();
  // Alternating runs, best of two per thread count: the machine may be shared.
  for (const threads of [2, 1, 2, 1]) {
    await page.selectOption('#threads', String(threads));
    await page.waitForSelector(`body[data-threads="${threads}"]`);
    const run = await scoreAll(page, speedLines, 'threads');
    assert.equal(run.threads, threads);
    assert.match(run.status, new RegExp(`pairs/s on ${threads} thread`), 'the status shows pairs/s and the thread count');
    run.rows.forEach((r, i) => {
      const n = native[i];
      [n.alignment, n.fwd_pmi, n.rev_pmi].forEach((v, j) => assert.ok(Math.abs(r[j] - v) <= TOL, `${threads} threads, pair ${i + 1}, value ${j}: ${r[j]} vs native ${v}`));
    });
    const prev = best.get(threads);
    if (prev) assert.deepEqual(run.rows, prev.rows, 'the same scores on every run');
    if (!prev || run.pairsPerSecond > prev.pairsPerSecond) best.set(threads, run);
    console.log(`# ${threads} thread(s): ${run.pairsPerSecond.toFixed(3)} pairs/s`);
  }
  assert.deepEqual(best.get(2).rows, best.get(1).rows, 'threads change no score');
  const ratio = best.get(2).pairsPerSecond / best.get(1).pairsPerSecond;
  console.log(`# threads: ${best.get(1).pairsPerSecond.toFixed(3)} pairs/s on 1, ${best.get(2).pairsPerSecond.toFixed(3)} on 2: ${ratio.toFixed(2)}x`);
  // This test checks that the threads run in parallel, not how fast: 1.3x
  // cannot come from threads taking turns, and noise on a shared 2-core
  // machine moves the ratio by a few hundredths (1.69x to 1.77x seen on one
  // machine). The speed target (1.7x) is measured by
  // wasm/benches/browser_compare.mjs --threads 1,2 and kept in BENCHMARKS.md.
  const machine = await machineScaling();
  console.log(`# machine: two busy threads get ${machine.toFixed(2)}x the work of one`);
  if (machine >= 1.8) {
    assert.ok(ratio >= 1.3, `2 threads score ${ratio.toFixed(2)}x the pairs/s of 1: they do not run in parallel (the machine gives ${machine.toFixed(2)}x)`);
  } else {
    t.diagnostic(`not asserted: the machine gives two threads only ${machine.toFixed(2)}x of one now`);
  }
  assert.deepEqual(pageErrors, []);
  await context.close();
});

test('without COOP/COEP the page falls back to one thread and says so', async () => {
  const line = samplePairs(1, 300);
  const native = nativeScores(line, 'e2e-plain').scores;
  const context = await browser.newContext();
  const pageErrors = [];
  const page = await pageWithModel(context, plainBase, pageErrors);
  assert.equal(await page.evaluate(() => crossOriginIsolated), false);
  const body = await page.$eval('body', (b) => ({ ...b.dataset }));
  assert.equal(body.isolated, 'false');
  assert.equal(body.poolThreads, '1');
  assert.equal(await page.isDisabled('#threads'), true, 'no thread choice');
  assert.match(await page.textContent('#threads-status'), /One thread only: this page is not cross-origin isolated/);
  const run = await scoreAll(page, line, 'plain');
  assert.equal(run.threads, 1);
  assert.ok(Math.abs(run.rows[0][0] - native[0].alignment) <= TOL, `alignment ${run.rows[0][0]} vs native ${native[0].alignment}`);
  assert.deepEqual(pageErrors, []);
  await context.close();
});
