#!/usr/bin/env node
// The side-by-side browser benchmark (issue 13): one headless Chromium, one
// page served from localhost (cross-origin isolated), every engine on the
// same real pairs at the same thread counts:
//   - MAIN (wasm/pkg-threads, or wasm/pkg at 1 thread): the four views, scoreBatch of 4 pairs, as the tool scores
//   - transformers.js (ONNX Runtime Web) on SmolLM2-135M-Instruct exported to ONNX from our F32
//     copy, fp32 (model.onnx) and int8 (model_quantized.onnx): the same four views' token ids, mean
//     target log-probs computed from the logits of every position
//   - wllama (llama.cpp in wasm) on the same GGUF: prompt processing of the same views, as text
//     (its 3.x API has no prompt log-probs), tokens/s only
// pairs/s = pairs / wall seconds of scoring; view tokens/s = every token of the four views / the
// same seconds (MAIN reuses the shared empty prompt, so it processes fewer than that).
//
// Needs: scripts/build-wasm, scripts/fetch-fixtures, wasm/benches/setup-peers (npm packages and
// the ONNX export; never part of CI).
// Usage: node wasm/benches/browser_compare.mjs [--pairs 20] [--threads 1,2] [--engines main,tjs-fp32,tjs-q8,wllama]
//        [--precisions exact,fast]   (MAIN's precisions: the first one's views and scores are the reference)
//        [--wllama-views 8]   (wllama's rate from the first views only: it is slow here)
import { mkdirSync, writeFileSync } from 'node:fs';
import { cpus, loadavg } from 'node:os';
import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { serve } from '../serve.mjs';
import { alpacaPath, fixtures, modelPath, requireFile, root, samplePairs } from '../tests/common.mjs';

const args = process.argv.slice(2);
const opt = (name, dflt) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : dflt;
};
const nPairs = Number(opt('--pairs', 20));
const engines = opt('--engines', 'main,tjs-fp32,tjs-q8,wllama').split(',');
const precisions = opt('--precisions', 'exact,fast').split(',');
// wllama processes prompts slowly here: its rate is measured on the first views only.
const wllamaViews = Number(opt('--wllama-views', 8));
const onnxDir = process.env.MAIN_ONNX_DIR ?? join(root, 'target', 'peers', 'onnx');
const peersDir = join(root, 'wasm', 'benches', 'peers', 'node_modules');
const outDir = join(root, 'target', 'wasm-bench');

requireFile(join(root, 'wasm', 'pkg-threads', 'main_wasm.js'), 'run scripts/build-wasm');
requireFile(modelPath, 'run scripts/fetch-fixtures');
requireFile(alpacaPath, 'run scripts/fetch-fixtures');
if (engines.some((e) => e.startsWith('tjs'))) requireFile(join(onnxDir, 'smollm2', 'onnx', 'model.onnx'), 'run wasm/benches/setup-peers');
requireFile(join(peersDir, '@wllama', 'wllama', 'esm', 'index.js'), 'run wasm/benches/setup-peers');

// Real pairs, of moderate length (the tests' sampler: first N with all texts <= 600 chars).
const pairs = samplePairs(nPairs, 600).map((l) => {
  const r = JSON.parse(l);
  return { instruction: r.input ? `${r.instruction}\n\n${r.input}` : r.instruction, response: r.output };
});

const { server, url } = await serve({ port: 0, fixtures, mounts: { '/benches/': join(root, 'wasm', 'benches'), '/peers/': peersDir, '/onnx/': onnxDir } });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-dev-shm-usage'],
});
const page = await browser.newPage();
page.on('console', (m) => m.type() === 'error' && console.error(`[page] ${m.text()}`));
page.on('pageerror', (e) => console.error(`[page error] ${e}`));
page.on('response', (r) => r.status() >= 400 && console.error(`[page] HTTP ${r.status()} ${r.url()}`));
page.setDefaultTimeout(0);
await page.goto(`${url}/benches/browser/`);
await page.waitForSelector('body[data-ready="true"]');
const env = await page.evaluate(() => ({ isolated: window.bench.isolated, cores: window.bench.cores, ua: navigator.userAgent }));
if (!env.isolated) throw new Error('the benchmark page is not cross-origin isolated');
const threadCounts = opt('--threads', `1,${env.cores}`).split(',').map(Number).filter((t, i, a) => a.indexOf(t) === i);

const modelUrl = '/fixtures/SmolLM2-135M-Instruct.Q4_1.gguf';
const results = [];
let views = null;
let texts = null;
let mainScores = null;
const rowOf = (engine, threads, r, tokens) => ({ engine, threads, seconds: r.seconds, pairsPerSecond: nPairs / r.seconds, viewTokensPerSecond: tokens / r.seconds, ...r.extra });

console.error(`# ${nPairs} pairs, threads ${threadCounts.join(', ')}, ${cpus()[0].model}, load ${loadavg().map((x) => x.toFixed(2)).join(' ')}`);
for (const threads of threadCounts) {
  // MAIN first: its views are what the peers score.
  let viewTokens = 0;
  for (const precision of precisions) {
    const m = await page.evaluate((job) => window.bench.runMain(job), { modelUrl, pairs, threads, precision });
    views ??= m.views;
    mainScores ??= m.scores;
    viewTokens = views.flat().reduce((n, v) => n + v.ids.length, 0);
    let maxDiff = 0;
    m.scores.forEach((s, i) => {
      const r = mainScores[i];
      for (const k of ['fwdCond', 'fwdUncond', 'revCond', 'revUncond']) maxDiff = Math.max(maxDiff, Math.abs(s[k] - r[k]));
    });
    if (engines.includes('main')) results.push(rowOf(`MAIN (${precision})`, m.threadsUsed, { seconds: m.seconds, extra: { maxViewDiffVsMain: maxDiff } }, viewTokens));
    console.error(`# MAIN ${precision}, ${threads} threads: ${(nPairs / m.seconds).toFixed(3)} pairs/s, views within ${maxDiff.toExponential(2)} of MAIN ${precisions[0]}`);
  }
  for (const [name, dtype] of [['tjs-fp32', 'fp32'], ['tjs-q8', 'q8']]) {
    if (!engines.includes(name)) continue;
    const r = await page.evaluate((job) => window.bench.runTransformers(job), { modelId: 'smollm2', dtype, views, threads, wantTexts: !texts });
    texts ??= r.texts;
    // The same numbers? Largest difference of the four views' means against MAIN's.
    let maxDiff = 0;
    r.scores.forEach((s, i) => {
      const mm = mainScores[i];
      [mm.fwdCond, mm.fwdUncond, mm.revCond, mm.revUncond].forEach((v, j) => (maxDiff = Math.max(maxDiff, Math.abs(v - s[j]))));
    });
    results.push(rowOf(`transformers.js ${dtype === 'q8' ? 'int8 (model_quantized.onnx)' : 'fp32'}`, threads, { seconds: r.seconds, extra: { maxViewDiffVsMain: maxDiff } }, viewTokens));
    console.error(`# ${name}, ${threads} threads: ${(nPairs / r.seconds).toFixed(3)} pairs/s, views within ${maxDiff.toExponential(2)} of MAIN`);
  }
  if (engines.includes('wllama')) {
    if (!texts) throw new Error('wllama needs the views as text: run a transformers.js engine too');
    const r = await page.evaluate((job) => window.bench.runWllama(job), { modelUrl, wasmUrl: '/peers/@wllama/wllama/esm/wasm/wllama.wasm', texts: texts.slice(0, wllamaViews), threads });
    results.push({
      engine: 'wllama (prompt only)',
      threads: r.multithread ? r.threadsUsed : 1,
      seconds: r.seconds,
      pairsPerSecond: null,
      viewTokensPerSecond: r.promptTokens / r.seconds,
      promptTokensPerSecond: r.promptTokens / r.promptSeconds,
      promptTokens: r.promptTokens,
    });
    console.error(`# wllama, ${threads} threads (multithread ${r.multithread}): ${(r.promptTokens / r.promptSeconds).toFixed(1)} prompt tokens/s (llama.cpp's timer), ${r.promptTokens} tokens in ${r.seconds.toFixed(1)} s; last: ${JSON.stringify(r.lastTimings)}`);
  }
}
await browser.close();
server.close();

const viewTokens = views.flat().reduce((n, v) => n + v.ids.length, 0);
const f = (x, d = 2) => (x == null ? 'n/a' : x.toFixed(d));
console.log(`\n${nPairs} real pairs (${viewTokens} view tokens), ${env.ua.match(/Chrome\/[\d.]+/)?.[0] ?? 'Chromium'}, ${cpus()[0].model}, load average now ${loadavg()[0].toFixed(2)}\n`);
console.log(`| engine | threads | pairs/s | view tokens/s | prompt tokens/s (own timer) | largest view-mean difference from MAIN ${precisions[0]} | fastest MAIN ÷ this |`);
console.log('|---|---|---|---|---|---|---|');
for (const r of results) {
  const mains = results.filter((x) => x.engine.startsWith('MAIN') && x.threads === r.threads);
  const main = mains.reduce((a, b) => (b.pairsPerSecond > a.pairsPerSecond ? b : a), mains[0]);
  const ratio = r.pairsPerSecond && main ? `${(main.pairsPerSecond / r.pairsPerSecond).toFixed(2)}x` : main && r.promptTokensPerSecond ? `tokens: ${(main.viewTokensPerSecond / r.promptTokensPerSecond).toFixed(2)}x` : '';
  const diff = r.maxViewDiffVsMain == null ? 'n/a' : r.maxViewDiffVsMain.toExponential(1);
  console.log(`| ${r.engine} | ${r.threads} | ${f(r.pairsPerSecond, 3)} | ${f(r.viewTokensPerSecond, 0)} | ${f(r.promptTokensPerSecond, 0)} | ${diff} | ${ratio} |`);
}
mkdirSync(outDir, { recursive: true });
const out = join(outDir, 'browser_compare.json');
writeFileSync(out, JSON.stringify({ date: new Date().toISOString(), pairs: nPairs, viewTokens, cpu: cpus()[0].model, loadavg: loadavg(), userAgent: env.ua, results }, null, 2) + '\n');
console.error(`# written: ${out}`);
