// The benchmark page (wasm/benches/browser_compare.mjs drives it): each
// engine runs in its own fresh Web Worker (wllama in the one it starts
// itself), one at a time, on the same pairs and the same thread count.
// Every asset comes from this server: MAIN's package, the peers' npm
// packages under /peers/, the ONNX export under /onnx/, the GGUF under /fixtures/.
import { Wllama } from '/peers/@wllama/wllama/esm/index.js';

const log = (s) => {
  document.getElementById('log').textContent += s + '\n';
};

/** Runs one job in a new module worker and resolves to its result. */
function inWorker(url, job) {
  return new Promise((resolve, reject) => {
    const w = new Worker(url, { type: 'module' });
    w.onmessage = ({ data }) => {
      if (data.type === 'log') return log(data.text);
      w.terminate();
      if (data.type === 'error') reject(new Error(data.message));
      else resolve(data.result);
    };
    w.onerror = (e) => {
      w.terminate();
      reject(new Error(`${url}: ${e.message}`));
    };
    w.postMessage(job);
  });
}

/**
 * MAIN: the tool's way (scoreBatch of 4 pairs). Returns the views' token ids
 * too, which the peers then score.
 */
export const runMain = (job) => inWorker('./main-worker.mjs', job);

/** transformers.js on ONNX Runtime Web: dtype 'fp32' (model.onnx) or 'q8' (model_quantized.onnx). */
export const runTransformers = (job) => inWorker('./transformers-worker.mjs', job);

/**
 * wllama: prompt processing of each view's text (its 3.x API has no prompt
 * log-probs), timed by llama.cpp's own counters and by the wall clock.
 */
export async function runWllama({ modelUrl, wasmUrl, texts, threads }) {
  const w = new Wllama({ default: wasmUrl, 'wllama.wasm': wasmUrl }, { suppressNativeLog: true });
  const blob = await (await fetch(modelUrl)).blob();
  await w.loadModel([blob], { n_threads: threads, n_ctx: 2048, n_batch: 2048, n_ubatch: 512, n_gpu_layers: 0 });
  const threadsUsed = w.getNumThreads();
  const multithread = w.isMultithread();
  // Warm-up (as for the other engines): one view, untimed.
  await w.createCompletion({ prompt: texts[0], max_tokens: 1, temperature: 0, cache_prompt: false });
  let promptTokens = 0;
  let promptMs = 0;
  let last = null;
  const t0 = performance.now();
  for (const prompt of texts) {
    const r = await w.createCompletion({ prompt, max_tokens: 1, temperature: 0, cache_prompt: false });
    promptTokens += r.timings.prompt_n;
    promptMs += r.timings.prompt_ms;
    last = r.timings;
  }
  const seconds = (performance.now() - t0) / 1000;
  await w.exit();
  return { seconds, promptTokens, promptSeconds: promptMs / 1000, threadsUsed, multithread, lastTimings: last };
}

window.bench = { runMain, runTransformers, runWllama, isolated: crossOriginIsolated, cores: navigator.hardwareConcurrency };
document.body.dataset.ready = 'true';
