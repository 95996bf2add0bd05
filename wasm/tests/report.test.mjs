// `main-score report` in headless Chromium (issue 23): the page written for
// target/report/scored-1000.jsonl (scripts/scored-demo) opens from disk with
// every network request refused, logs no error, draws every chart with the
// bars and dots its data implies, and shows numbers equal to those computed
// here, independently, from the scored JSONL's raw records. Saves a
// full-page screenshot to target/report/report.png (a CI artifact).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

import { mainScoreBin, requireFile, root } from './common.mjs';

const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
const dir = join(root, 'target', 'report');
const scored = join(dir, 'scored-1000.jsonl');
const html = join(dir, 'report.html');
const FIELDS = ['alignment', 'fwd_pmi', 'rev_pmi', 'fwd_pmi_total', 'rev_pmi_total', 'semantic', 'ifd', 'structural', 'response_tokens', 'instruction_tokens'];
const KEEP_TOP = 0.3;
const MIN_ALIGNMENT = 0;

let browser;
let records;

before(async () => {
  requireFile(scored, 'run scripts/scored-demo');
  records = readFileSync(scored, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
  execFileSync(mainScoreBin(), ['report', scored, '-o', html, '--json', join(dir, 'report.json'),
    '--keep-top', String(KEEP_TOP), '--min', `alignment=${MIN_ALIGNMENT}`], { stdio: ['ignore', 'ignore', 'inherit'] });
  browser = await chromium.launch({
    executablePath: requireFile(chromiumPath, 'install it: apt-get install -y chromium'),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
});

after(async () => {
  await browser?.close();
});

// --- independent numbers, from the raw records ------------------------------

const value = (r, f) => (typeof r.alignment[f] === 'number' ? r.alignment[f] : null);

/** numpy's default quantile of sorted numbers. */
function quantile(sorted, p) {
  if (!sorted.length) return null;
  const pos = p * (sorted.length - 1), lo = Math.floor(pos), hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

function ranks(x) {
  const order = x.map((_, i) => i).sort((a, b) => x[a] - x[b] || a - b);
  const r = new Array(x.length);
  for (let i = 0; i < order.length;) {
    let j = i;
    while (j < order.length && x[order[j]] === x[order[i]]) j++;
    for (let k = i; k < j; k++) r[order[k]] = (i + j + 1) / 2;
    i = j;
  }
  return r;
}

function pearson(a, b) {
  const n = a.length;
  const ma = a.reduce((s, x) => s + x, 0) / n, mb = b.reduce((s, x) => s + x, 0) / n;
  let ab = 0, aa = 0, bb = 0;
  for (let i = 0; i < n; i++) { ab += (a[i] - ma) * (b[i] - mb); aa += (a[i] - ma) ** 2; bb += (b[i] - mb) ** 2; }
  return aa > 0 && bb > 0 ? ab / Math.sqrt(aa * bb) : null;
}

function spearman(f) {
  const pairs = records.map((r) => [value(r, f), value(r, 'response_tokens')]).filter(([a, b]) => a !== null && b !== null);
  return pearson(ranks(pairs.map((p) => p[0])), ranks(pairs.map((p) => p[1])));
}

function sortedValues(f) {
  return records.map((r) => value(r, f)).filter((x) => x !== null).sort((a, b) => a - b);
}

/** The bins of a field's histogram: range [q0.005, q0.995], 40 bins. */
function bins(f) {
  const s = sortedValues(f);
  let lo = quantile(s, 0.005), hi = quantile(s, 0.995);
  if (!(hi > lo)) { lo -= 0.5; hi += 0.5; }
  const counts = new Array(40).fill(0);
  let outside = 0;
  for (const x of s) {
    if (x < lo || x > hi) { outside++; continue; }
    counts[Math.min(Math.floor((x - lo) / (hi - lo) * 40), 39)]++;
  }
  return { counts, outside };
}

function kept() {
  const key = (r) => value(r, 'fwd_pmi_total') ?? -Infinity;
  const order = records.map((_, i) => i).sort((a, b) => key(records[b]) - key(records[a]) || a - b);
  const top = new Set(order.slice(0, Math.round(KEEP_TOP * records.length)));
  return records.filter((r, i) => top.has(i) && value(r, 'alignment') !== null && value(r, 'alignment') >= MIN_ALIGNMENT).length;
}

function normalise(t) { return t.split(/\s+/).filter(Boolean).join(' ').toLowerCase(); }
function texts(r) {
  if (r.conversations) {
    const u = r.conversations.filter((m) => m.from === 'human').map((m) => m.value);
    const a = r.conversations.filter((m) => m.from === 'gpt').map((m) => m.value);
    return [u.join('\n\n'), a.join('\n\n')];
  }
  return [r.input ? `${r.instruction}\n\n${r.input}` : r.instruction, r.output];
}
function exactGroups(which) {
  const counts = new Map();
  for (const r of records) {
    const [i, o] = texts(r).map(normalise);
    const k = which === 'instruction' ? i : which === 'response' ? o : `${i}\u001f${o}`;
    counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  const groups = [...counts.values()].filter((c) => c > 1);
  return { groups: groups.length, records: groups.reduce((s, c) => s + c, 0) };
}

const close = (a, b, what) => assert.ok(Math.abs(Number(a) - b) <= 1e-9 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);

// --- the page ------------------------------------------------------------------

test('report.html opens offline, draws every chart and shows the numbers of the data', async () => {
  const page = await browser.newPage({ viewport: { width: 1300, height: 900 } });
  const errors = [];
  const requests = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
  page.on('pageerror', (e) => errors.push(String(e)));
  await page.route('**/*', (route) => {
    const url = route.request().url();
    if (url.startsWith('file:')) return route.continue();
    requests.push(url);
    return route.abort();
  });
  await page.goto(pathToFileURL(html).href);
  await page.waitForSelector('.main-report svg.main-quadrants');
  assert.deepEqual(requests, [], 'the page asked the network');
  assert.deepEqual(errors, [], 'console errors');

  const n = records.length;
  const q = await page.$$eval('text.quadrant', (ts) => Object.fromEntries(ts.map((t) => [t.dataset.quadrant, Number(t.dataset.count)])));
  const sign = { aligned: 0, ignores_instruction: 0, not_recoverable: 0, both_weak: 0 };
  for (const r of records) {
    const f = value(r, 'fwd_pmi'), v = value(r, 'rev_pmi');
    if (f === null || v === null) continue;
    sign[f > 0 ? (v > 0 ? 'aligned' : 'not_recoverable') : (v > 0 ? 'ignores_instruction' : 'both_weak')]++;
  }
  assert.deepEqual(q, sign);
  assert.equal(await page.$eval('.main-count[data-key=records]', (e) => Number(e.dataset.value)), n);
  assert.equal(await page.$eval('.main-count[data-key=conversations]', (e) => Number(e.dataset.value)), records.filter((r) => r.conversations).length);

  // The filter's kept records and share.
  const k = await page.$eval('.main-kept', (e) => ({ kept: Number(e.dataset.kept), share: Number(e.dataset.share) }));
  assert.equal(k.kept, kept());
  close(k.share, kept() / n, 'share kept');

  // Histograms: one bar per non-empty bin, with its count.
  for (const f of FIELDS) {
    const bars = await page.$$eval(`svg.main-hist[data-field=${f}] rect.bar`, (rs) => rs.map((r) => [Number(r.dataset.bin), Number(r.dataset.count)]));
    const outside = await page.$$eval(`svg.main-hist[data-field=${f}] rect.outside`, (rs) => rs.reduce((s, r) => s + Number(r.dataset.count), 0));
    const b = bins(f);
    assert.deepEqual(bars, b.counts.map((c, i) => [i, c]).filter(([, c]) => c > 0), `bars of ${f}`);
    assert.equal(outside, b.outside, `outside of ${f}`);
  }
  // The threshold lines: fwd_pmi_total's (keep-top) and alignment's (min).
  assert.equal(await page.$$eval('line.threshold', (ls) => ls.length), 2);
  const passing = records.filter((r) => value(r, 'alignment') !== null && value(r, 'alignment') >= MIN_ALIGNMENT).length;
  close(await page.$eval('svg.main-hist[data-field=alignment] text.kept-share', (t) => t.dataset.share), passing / n, 'share alignment >= 0');
  close(await page.$eval('svg.main-hist[data-field=fwd_pmi_total] text.kept-share', (t) => t.dataset.share), Math.round(KEEP_TOP * n) / n, 'share of the top');

  // Dots: every record (1,000 <= the 2,000 sampled).
  assert.equal(await page.$$eval('svg.main-quadrants circle.dot', (c) => c.length), n);
  for (const f of FIELDS.filter((f) => !f.endsWith('_tokens'))) {
    const dots = await page.$$eval(`svg.main-length[data-y=${f}] circle.dot`, (c) => c.length);
    assert.equal(dots, records.filter((r) => value(r, f) !== null && value(r, 'response_tokens') !== null).length, `dots of ${f}`);
    const rho = await page.$eval(`text.rho[data-field=${f}]`, (t) => t.dataset.value);
    close(rho, spearman(f), `rho of ${f}`);
  }

  // The summary table: quantiles and rho as main-score score prints them.
  for (const f of ['alignment', 'fwd_pmi', 'rev_pmi', 'fwd_pmi_total', 'rev_pmi_total', 'semantic', 'ifd']) {
    const s = sortedValues(f);
    for (const [col, p] of [['p10', 0.1], ['p50', 0.5], ['p90', 0.9]]) {
      const shown = await page.$eval(`table.main-summary tr[data-field=${f}] td[data-col=${col}]`, (t) => t.dataset.value);
      close(shown, quantile(s, p), `${col} of ${f}`);
    }
  }
  // Percentiles 5, 50, 95 of every field.
  for (const f of FIELDS) {
    for (const p of [5, 50, 95]) {
      const shown = await page.$eval(`table.main-stats tr[data-field=${f}] td[data-p="${p}"]`, (t) => t.dataset.value);
      close(shown, quantile(sortedValues(f), p / 100), `p${p} of ${f}`);
    }
  }

  // Examples: three, each with a heat map of its response's tokens.
  const examples = await page.$$eval('div.main-example', (ds) => ds.map((d) => ({ line: Number(d.dataset.line), tokens: d.querySelectorAll('span.tok').length })));
  assert.equal(examples.length, 3);
  for (const e of examples) {
    const r = records.find((r) => r.alignment.line === e.line);
    assert.equal(e.tokens, Math.min(256, r.alignment.response_detail.length), `tokens of line ${e.line}`);
  }

  // Exact duplicates, and the conversations' weakest turns.
  for (const which of ['instruction', 'response', 'pair']) {
    const shown = await page.$eval(`p.main-dup-count[data-kind=exact][data-text=${which}]`, (p) => ({ groups: Number(p.dataset.groups), records: Number(p.dataset.records) }));
    assert.deepEqual(shown, exactGroups(which), `exact duplicate ${which}s`);
  }
  const turns = records.flatMap((r) => (r.alignment.turns ?? []).map((t) => t.alignment)).filter((a) => a !== null).sort((a, b) => a - b);
  const shownTurns = await page.$$eval('table.main-turns tr.turn', (ts) => ts.map((t) => Number(t.dataset.alignment)));
  assert.deepEqual(shownTurns, turns.slice(0, 10));
  assert.ok(await page.$('pre.main-provenance'), 'the provenance');

  await page.screenshot({ path: join(dir, 'report.png'), fullPage: true });
  await page.close();
});
