#!/usr/bin/env node
// Speed of scoring in the browser (headless Chromium, one thread, simd128)
// against the native engine on one thread (`main-score score --threads 1`),
// on the same real Alpaca pairs. Prints both rates and the ratio; asserts
// nothing (benchmarks never assert timings).
//
// Usage: node wasm/benches/wasm_speed.mjs [N_PAIRS=10] [precision=exact|fast|int8]
// Needs: scripts/build-wasm, a release main-score, /usr/bin/chromium, npm ci in wasm/.
import { join } from 'node:path';

import { chromium } from 'playwright-core';

import { modelPath, nativeScores, samplePairs } from '../tests/common.mjs';
import { serve } from '../serve.mjs';

const n = Number(process.argv[2] ?? 10);
// exact is the browser's default, and the fastest on wasm (simd128 has no byte dot product).
const precision = process.argv[3] ?? 'exact';
const lines = samplePairs(n, 400);

const nativeArgs = ['--threads', '1', '--batch', String(n), '--precision', precision];
const native = nativeScores(lines, 'bench-pairs', nativeArgs);

const { server, url } = await serve({ port: 0, fixtures: join(modelPath, '..') });
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
});
let result;
try {
  const page = await browser.newPage();
  page.on('console', (m) => console.error(`[page] ${m.text()}`));
  await page.goto(`${url}/pkg/main_wasm.d.ts`); // any page of the origin: the module is imported below
  result = await page.evaluate(
    async ({ lines, precision }) => {
      const m = await import('/pkg/main_wasm.js');
      await m.default();
      const bytes = new Uint8Array(await (await fetch('/fixtures/SmolLM2-135M-Instruct.Q4_1.gguf')).arrayBuffer());
      const model = m.Model.fromBytes(bytes);
      const pairs = lines.map((l, i) => m.parseRecord(l, i + 1));
      const t0 = performance.now();
      const scorer = new m.Scorer(model, null, { precision });
      const scores = scorer.scoreBatch(pairs);
      const seconds = (performance.now() - t0) / 1000;
      return { seconds, alignments: scores.map((s) => s.alignment) };
    },
    { lines, precision },
  );
} finally {
  await browser.close();
  server.close();
}

const maxDiff = Math.max(...result.alignments.map((a, i) => Math.abs(a - native.scores[i].alignment)));
const nativeRate = n / native.seconds;
const wasmRate = n / result.seconds;
console.log(`pairs: ${n} real Alpaca pairs (<= 400 chars), precision ${precision}`);
console.log(`native, 1 thread (whole main-score run): ${native.seconds.toFixed(2)} s = ${nativeRate.toFixed(3)} pairs/s`);
console.log(`browser, 1 thread, simd128 (scorer + scoreBatch): ${result.seconds.toFixed(2)} s = ${wasmRate.toFixed(3)} pairs/s`);
console.log(`ratio browser/native: ${((100 * wasmRate) / nativeRate).toFixed(1)}%`);
console.log(`largest alignment difference browser vs native: ${maxDiff.toExponential(2)}`);
