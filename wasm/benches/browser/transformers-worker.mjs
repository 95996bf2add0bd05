// transformers.js (ONNX Runtime Web, wasm backend) in a worker: the model
// exported from our F32 copy of SmolLM2-135M-Instruct, every view scored as
// MAIN does (the same token ids; the mean log-prob of the targets).
import { AutoModelForCausalLM, AutoTokenizer, Tensor, env } from '/peers/@huggingface/transformers/dist/transformers.js';

env.allowRemoteModels = false;
env.allowLocalModels = true;
env.localModelPath = '/onnx/';
env.useBrowserCache = false;
const ort = '/peers/onnxruntime-web/dist/';
env.backends.onnx.wasm.wasmPaths = { mjs: `${ort}ort-wasm-simd-threaded.mjs`, wasm: `${ort}ort-wasm-simd-threaded.wasm` };

/** Mean over targets of log p(ids[t] | ids[..t]) from logits [1, L, V]. */
function meanTargetLogprob(logits, ids, nPrompt) {
  const [, , vocab] = logits.dims;
  const data = logits.data;
  let sum = 0;
  for (let t = nPrompt; t < ids.length; t++) {
    const row = (t - 1) * vocab;
    let max = -Infinity;
    for (let v = 0; v < vocab; v++) if (data[row + v] > max) max = data[row + v];
    let z = 0;
    for (let v = 0; v < vocab; v++) z += Math.exp(data[row + v] - max);
    sum += data[row + ids[t]] - max - Math.log(z);
  }
  return sum / (ids.length - nPrompt);
}

onmessage = async ({ data: { modelId, dtype, views, threads, wantTexts } }) => {
  try {
    env.backends.onnx.wasm.numThreads = threads;
    const model = await AutoModelForCausalLM.from_pretrained(modelId, { dtype, device: 'wasm' });
    const run = async ({ ids, nPrompt }) => {
      const input_ids = new Tensor('int64', BigInt64Array.from(ids, BigInt), [1, ids.length]);
      const attention_mask = new Tensor('int64', new BigInt64Array(ids.length).fill(1n), [1, ids.length]);
      const { logits } = await model({ input_ids, attention_mask });
      return meanTargetLogprob(logits, ids, nPrompt);
    };
    // Warm-up: the first pair's four views, untimed.
    for (const v of views[0]) await run(v);
    const scores = [];
    const t0 = performance.now();
    for (const pair of views) {
      const s = [];
      for (const v of pair) s.push(await run(v));
      scores.push(s);
    }
    const seconds = (performance.now() - t0) / 1000;
    let texts = null;
    if (wantTexts) {
      // The views as text (special tokens kept), for the engine that takes text only.
      const tok = await AutoTokenizer.from_pretrained(modelId);
      texts = views.flat().map((v) => tok.decode(v.ids, { skip_special_tokens: false }));
    }
    await model.dispose();
    postMessage({ type: 'result', result: { seconds, scores, texts } });
  } catch (e) {
    postMessage({ type: 'error', message: e instanceof Error ? `${e.message}\n${e.stack}` : String(e) });
  }
};
