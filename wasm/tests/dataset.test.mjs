// End-to-end test of the annotation tool's data set view (issue 23) in
// headless Chromium: open a file scored by `main-score score`, check the
// charts the engine's report data and render.js draw, drag the threshold
// with the mouse, export the kept records and sort and filter the table;
// then bad files. Every expected number is computed here from the JSONL
// itself, never read back from the page. No model is loaded: the view needs
// none. Screenshot: target/wasm-e2e/dataset.png.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, test } from 'node:test';

import { chromium } from 'playwright-core';

import { alpacaPath, requireFile, root } from './common.mjs';
import { serve } from '../serve.mjs';

const e2eDir = join(root, 'target', 'wasm-e2e');
const chromiumPath = process.env.CHROMIUM ?? '/usr/bin/chromium';
/** The scored file: scripts/scored-demo writes it (1,000 real pairs scored with --tokens). */
const scoredPath = process.env.MAIN_SCORED ?? join(root, 'target', 'report', 'scored-1000.jsonl');

let server;
let base;
let browser;

before(async () => {
  requireFile(join(root, 'wasm', 'pkg', 'main_wasm.js'), 'run scripts/build-wasm');
  requireFile(join(root, 'wasm', 'pkg', 'report-render.js'), 'run scripts/build-wasm (it copies engine/src/report/render.js)');
  requireFile(scoredPath, 'run scripts/scored-demo (or set MAIN_SCORED to a file main-score score wrote)');
  mkdirSync(e2eDir, { recursive: true });
  // Not cross-origin isolated: the view needs no threads, and the page's
  // scoring worker then loads the one-thread build (pkg/) only.
  ({ server, url: base } = await serve({ port: 0, isolate: false }));
  browser = await chromium.launch({
    executablePath: requireFile(chromiumPath, 'install it: apt-get install -y chromium'),
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
  });
});

after(async () => {
  await browser?.close();
  server?.close();
});

/** The file's records, read here: each line's exact bytes (with its '\n'), its line number and its "alignment" object. */
function readScored(path) {
  const bytes = readFileSync(path);
  const out = [];
  let start = 0;
  for (let n = 1; start < bytes.length; n++) {
    const nl = bytes.indexOf(0x0a, start);
    const end = nl < 0 ? bytes.length : nl + 1;
    const raw = bytes.subarray(start, end);
    const text = raw.toString('utf8').trim();
    if (text) {
      const r = JSON.parse(text);
      // The searched text of an Alpaca record; a conversation's is its whole line (the word check below avoids them).
      const alpaca = typeof r.instruction === 'string';
      out.push({ fileLine: n, raw, record: r, a: r.alignment, alpaca, text: (alpaca ? `${r.instruction}\n\n${r.input}\n${r.output}` : text).toLowerCase() });
    }
    start = end;
  }
  return out;
}

const value = (rec, field) => (typeof rec.a[field] === 'number' ? rec.a[field] : NaN);

test('data set view: charts, threshold drag, export, table', async () => {
  const t0 = performance.now();
  const recs = readScored(scoredPath);
  const n = recs.length;
  assert.ok(n >= 100, `${scoredPath} holds ${n} records`);
  const context = await browser.newContext({ acceptDownloads: true, viewport: { width: 1280, height: 1000 } });
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(`${base}/www/#dataset`);
  assert.equal(await page.isVisible('#dataset-view'), true, '#dataset opens the data set view');
  assert.equal(await page.isVisible('#annotate-view'), false);

  // With its provenance (scripts/scored-demo writes it), which the report then shows.
  const provenancePath = `${scoredPath}.provenance.json`;
  const withProvenance = existsSync(provenancePath);
  await page.setInputFiles('#dataset-file', withProvenance ? [scoredPath, provenancePath] : [scoredPath]);
  await page.waitForSelector('body[data-dataset="ready"]', { timeout: 60_000 });
  assert.equal(await page.textContent('#errors'), '', 'no errors shown');
  if (withProvenance) {
    const shownProvenance = JSON.parse(await page.textContent('pre.main-provenance'));
    assert.deepEqual(shownProvenance, JSON.parse(readFileSync(provenancePath, 'utf8')), 'the provenance shown is the file');
  }
  const status = await page.textContent('#dataset-status');
  assert.equal(Number(await page.getAttribute('.main-count[data-key="records"]', 'data-value')), n, 'the report counts every record');

  // Histograms: one per report field; alignment's bars and outside counts hold every record that has it.
  const fields = await page.$$eval('svg.main-hist', (svgs) => svgs.map((s) => s.dataset.field));
  assert.ok(fields.includes('alignment') && fields.includes('fwd_pmi') && fields.includes('rev_pmi'), `histograms: ${fields}`);
  for (const field of ['alignment', 'fwd_pmi', 'response_tokens']) {
    const inBars = await page.$$eval(`svg.main-hist[data-field="${field}"] rect.bar, svg.main-hist[data-field="${field}"] rect.outside`, (rs) => rs.reduce((s, r) => s + Number(r.dataset.count), 0));
    const bars = await page.$$eval(`svg.main-hist[data-field="${field}"] rect.bar`, (rs) => rs.length);
    assert.ok(bars >= 5, `${field}: ${bars} bars drawn`);
    assert.equal(inBars, recs.filter((r) => !Number.isNaN(value(r, field))).length, `${field}: the bars count every record with a value`);
  }
  // The scatter: one dot per sampled record (all of them up to 2,000).
  const dots = await page.$$eval('svg.main-quadrants circle.dot', (cs) => cs.map((c) => c.dataset.line));
  assert.equal(dots.length, Math.min(n, 2000), 'one dot per sampled record');
  const byLine0 = new Set(recs.map((r) => String(r.a.line ?? r.fileLine)));
  assert.ok(dots.every((l) => byLine0.has(l)), 'every dot is a record of the file');

  // Drag the threshold on alignment's histogram from 30% to 60% of its width.
  const box = await page.locator('svg.main-hist[data-field="alignment"]').boundingBox();
  const y = box.y + box.height * 0.5;
  await page.mouse.move(box.x + box.width * 0.3, y);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width * 0.45, y, { steps: 4 });
  // Live, before the button is released: the count and the dots' colours follow the hand.
  await page.evaluate(() => new Promise((r) => requestAnimationFrame(() => r())));
  const during = await page.$eval('#kept', (k) => ({ ...k.dataset }));
  assert.equal(Number(during.kept), recs.filter((r) => value(r, 'alignment') >= Number(during.threshold)).length, `kept during the drag at ${during.threshold}`);
  const byLine = new Map(recs.map((r) => [String(r.a.line ?? r.fileLine), r]));
  const dotColours = () => page.$$eval('svg.main-quadrants circle.dot', (cs) => cs.map((c) => [c.dataset.line, c.classList.contains('kept')]));
  for (const [line, isKept] of await dotColours()) assert.equal(isKept, value(byLine.get(line), 'alignment') >= Number(during.threshold), `dot of line ${line} during the drag`);
  await page.mouse.move(box.x + box.width * 0.6, y, { steps: 4 });
  await page.mouse.up();
  const kept = await page.$eval('#kept', (k) => ({ ...k.dataset }));
  const t = Number(kept.threshold);
  assert.equal(kept.field, 'alignment');
  assert.ok(t > Number(during.threshold), 'the threshold moved right with the pointer');
  const sorted = recs.map((r) => value(r, 'alignment')).filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
  assert.ok(t > sorted[0] && t < sorted[sorted.length - 1], `the drag set a threshold inside the data: ${t}`);
  const expected = recs.filter((r) => value(r, 'alignment') >= t);
  assert.equal(Number(kept.kept), expected.length, `kept at alignment >= ${t}`);
  assert.equal(Number(await page.inputValue('#threshold-value')), t, 'the number input follows the drag');
  assert.equal(Number(await page.getAttribute('svg.main-hist[data-field="alignment"] line.threshold', 'data-value')), t, 'the line stays where it was dropped');
  assert.equal(Number(await page.getAttribute('svg.main-hist[data-field="alignment"] text.kept-share', 'data-share')), expected.length / n, 'the histogram shows the exact share');
  // Drawn again once released: the dots by the same rule.
  for (const [line, isKept] of await dotColours()) assert.equal(isKept, value(byLine.get(line), 'alignment') >= t, `dot of line ${line}`);

  // Export: exactly the kept lines, byte for byte, in file order.
  const [download] = await Promise.all([page.waitForEvent('download'), page.click('#dataset-export')]);
  const exportedPath = join(e2eDir, 'dataset.kept.jsonl');
  await download.saveAs(exportedPath);
  assert.ok(Buffer.concat(expected.map((r) => r.raw)).equals(readFileSync(exportedPath)), `the export holds the ${expected.length} kept lines byte for byte`);

  // A threshold typed in (keyboard users), on another field.
  await page.selectOption('#threshold-field', 'fwd_pmi');
  await page.fill('#threshold-value', '0.5');
  await page.press('#threshold-value', 'Enter');
  assert.equal(Number(await page.getAttribute('#kept', 'data-kept')), recs.filter((r) => value(r, 'fwd_pmi') >= 0.5).length, 'kept at fwd_pmi >= 0.5');

  // The table: every record, sortable by a score, filtered by kept and by text.
  assert.equal(Number(await page.getAttribute('#records-count', 'data-shown')), n);
  await page.click('#records th button[data-sort="alignment"]');
  const shownAlignment = await page.$$eval('#records tbody td[data-col="alignment"]', (tds) => tds.map((td) => Number(td.dataset.value)));
  assert.equal(shownAlignment.length, Math.min(n, 100), 'one page of rows');
  assert.deepEqual(shownAlignment, sorted.slice().reverse().slice(0, shownAlignment.length), 'sorted by alignment, highest first');
  await page.click('#records th button[data-sort="alignment"]');
  assert.equal(Number(await page.$eval('#records tbody td[data-col="alignment"]', (td) => td.dataset.value)), sorted[0], 'then lowest first');
  await page.selectOption('#records-kept', 'dropped');
  const dropped = recs.filter((r) => !(value(r, 'fwd_pmi') >= 0.5));
  assert.equal(Number(await page.getAttribute('#records-count', 'data-shown')), dropped.length, 'only the dropped records');
  assert.ok((await page.$$eval('#records tbody tr', (trs) => trs.map((tr) => tr.dataset.kept))).every((k) => k === 'false'));
  await page.selectOption('#records-kept', 'all');
  // A word in some Alpaca records and in no conversation, whose shown turn this test does not pick itself.
  const word = ['water', 'recipe', 'color', 'story'].find((w) => recs.some((r) => r.text.includes(w)) && !recs.some((r) => !r.alpaca && r.text.includes(w)));
  assert.ok(word, 'a word to search for');
  await page.fill('#records-text', word);
  const withWord = recs.filter((r) => r.text.includes(word));
  assert.ok(withWord.length > 0 && withWord.length < n, `'${word}' is in ${withWord.length} records`);
  assert.equal(Number(await page.getAttribute('#records-count', 'data-shown')), withWord.length, `records holding '${word}'`);
  await page.fill('#records-text', '');
  await page.click('#records th button[data-sort="fileLine"]');
  assert.deepEqual(await page.$$eval('#records tbody tr', (trs) => trs.slice(0, 3).map((tr) => Number(tr.dataset.line))), recs.slice(0, 3).map((r) => r.fileLine));

  // The controls, the histograms with the threshold and the scatter (the whole page is several screens).
  await page.evaluate(() => document.getElementById('dataset-h').scrollIntoView());
  await page.screenshot({ path: join(e2eDir, 'dataset.png') });
  assert.deepEqual(pageErrors, []);
  await context.close();
  console.log(`# data set view: ${status}; the whole test ${((performance.now() - t0) / 1000).toFixed(1)} s`);
});

test('data set view: bad files name the line and keep the loaded one', async () => {
  const context = await browser.newContext();
  const page = await context.newPage();
  const pageErrors = [];
  page.on('pageerror', (e) => pageErrors.push(String(e)));
  await page.goto(`${base}/www/#dataset`);
  const lines = readFileSync(scoredPath, 'utf8').split('\n').filter((l) => l.trim()).slice(0, 5);
  const good = join(e2eDir, 'dataset-good.jsonl');
  writeFileSync(good, lines.join('\n') + '\n');
  await page.setInputFiles('#dataset-file', good);
  await page.waitForSelector('body[data-dataset="ready"]');
  const before = await page.textContent('#kept');

  const cases = [
    ['truncated', [lines[0], lines[1], lines[2].slice(0, 200)], /line 3\b.*(cut short|ends early|EOF)/i],
    ['invalid', [lines[0], '{"instruction": "a", oops}'], /line 2\b.*invalid JSON/i],
    ['unscored', readFileSync(alpacaPath, 'utf8').split('\n').slice(0, 2), /line 1\b.*alignment/i],
  ];
  for (const [name, body, expected] of cases) {
    const path = join(e2eDir, `dataset-${name}.jsonl`);
    writeFileSync(path, body.join('\n') + '\n');
    await page.evaluate(() => {
      document.getElementById('errors').replaceChildren();
      delete document.body.dataset.dataset;
    });
    await page.setInputFiles('#dataset-file', path);
    await page.waitForSelector('body[data-dataset="error"]');
    const shown = await page.textContent('#errors');
    assert.match(shown, expected, `${name}: ${shown}`);
    assert.match(shown, new RegExp(`dataset-${name}\\.jsonl`), `${name}: the error names the file`);
    assert.equal(await page.textContent('#kept'), before, `${name}: the loaded file stays`);
    assert.equal(Number(await page.getAttribute('#records-count', 'data-shown')), lines.length);
  }
  // A provenance file that is not JSON.
  const badProvenance = join(e2eDir, 'dataset-bad.provenance.json');
  writeFileSync(badProvenance, '{"main_score": ');
  await page.evaluate(() => {
    document.getElementById('errors').replaceChildren();
    delete document.body.dataset.dataset;
  });
  await page.setInputFiles('#dataset-file', [good, badProvenance]);
  await page.waitForSelector('body[data-dataset="error"]');
  assert.match(await page.textContent('#errors'), /dataset-bad\.provenance\.json: not a provenance file/);
  assert.equal(await page.textContent('#kept'), before);
  assert.deepEqual(pageErrors, []);
  await context.close();
});
