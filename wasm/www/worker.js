// The scoring worker: owns the wasm module, the one loaded model and the
// scorer, so the page stays responsive while pairs are scored.
//
// Threads: when the page is cross-origin isolated (scripts/annotate sends the
// COOP/COEP headers), the threaded build (pkg-threads) is loaded and starts
// one Web Worker per core sharing its memory; otherwise the single-threaded
// build (pkg) scores on this worker alone, and 'ready' says why.
//
// Messages in:  {type:'parse', id, text, source}
//               {type:'load', file?: File, url?: string}
//               {type:'threads', threads}  (scorers from now on use that many; 0 = all)
//               {type:'score', items: [{key, instruction, response}]}
//               {type:'detail', key, instruction, response}
//               {type:'guess', key, response}
// Messages out: {type:'ready', isolated, poolThreads} {type:'threads', threads}
//               {type:'parsed', id, pairs: [{record, instruction, response}], errors: [string]}
//               {type:'load-progress', loaded, total} {type:'model', description, fileBytes}
//               {type:'scored', key, score} {type:'score-progress', done, total, seconds, threads} {type:'score-done', seconds, threads}
//               {type:'detail', key, score} {type:'guess', key, text}
//               {type:'memory', wasmBytes} {type:'error', during, message, key?}
const isolated = self.crossOriginIsolated === true;
/** The threaded build's pool: every core the browser reports. */
const poolThreads = isolated ? Math.max(1, navigator.hardwareConcurrency || 1) : 1;
let ModelLoader;
let Scorer;
let parseRecord;

async function start() {
  const pkg = await import(isolated ? '../pkg-threads/main_wasm.js' : '../pkg/main_wasm.js');
  const exports = await pkg.default();
  // The pool must exist before the first Scorer (which would fix it at one thread).
  if (isolated) await pkg.initThreadPool(poolThreads);
  ({ ModelLoader, Scorer, parseRecord } = pkg);
  return exports;
}

const ready = start();
ready.then(() => postMessage({ type: 'ready', isolated, poolThreads }), (e) => fail('init', e));
let model = null;
let scorer = null;
/** Threads of new scorers: 0 = the whole pool. */
let threads = 0;
let fileBytes = 0;
/** Pairs per fused scoring call: fused batches are faster, small ones keep the bar moving. */
const BATCH = 4;

function fail(during, e, key) {
  postMessage({ type: 'error', during, key, message: e instanceof Error ? e.message : String(e) });
}

function reportMemory(exports) {
  postMessage({ type: 'memory', wasmBytes: exports.memory.buffer.byteLength });
}

/** Streams the model into wasm memory chunk by chunk: the page never holds a second whole copy. */
async function loadModel({ file, url }) {
  const exports = await ready;
  let total;
  let stream;
  if (file) {
    total = file.size;
    stream = file.stream();
  } else {
    const res = await fetch(url);
    if (!res.ok) throw new Error(`cannot fetch ${url}: HTTP ${res.status}`);
    total = Number(res.headers.get('content-length'));
    if (!total) throw new Error(`${url}: the server sent no Content-Length; download the file and pick it instead`);
    stream = res.body;
  }
  scorer?.free();
  scorer = null;
  model?.free();
  model = null;
  const loader = new ModelLoader(total);
  const report = () => postMessage({ type: 'load-progress', loaded: loader.written, total });
  let last = 0;
  const write = (bytes) => {
    loader.write(bytes);
    if (loader.written - last >= 4 << 20 || loader.written === total) {
      last = loader.written;
      report();
    }
  };
  let byob = null;
  try {
    byob = stream.getReader({ mode: 'byob' });
  } catch {
    byob = null; // not a byte stream: read the chunks it makes
  }
  if (byob) {
    // One reused 4 MiB buffer: no garbage chunks pile up in JS while the model streams in.
    let buf = new ArrayBuffer(4 << 20);
    for (;;) {
      const { done, value } = await byob.read(new Uint8Array(buf));
      if (done) break;
      write(value);
      buf = value.buffer;
    }
  } else {
    const reader = stream.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      write(value);
    }
  }
  model = loader.finish();
  fileBytes = model.fileBytes;
  const description = model.description;
  // The scorer shares the weights; the handle stays to make scorers of other thread counts.
  scorer = new Scorer(model, null, { threads });
  postMessage({ type: 'model', description, fileBytes, threads: scorer.threads });
  reportMemory(exports);
}

async function score(items) {
  const exports = await ready;
  const t0 = performance.now();
  for (let i = 0; i < items.length; i += BATCH) {
    const chunk = items.slice(i, i + BATCH);
    let scores;
    try {
      scores = scorer.scoreBatch(chunk.map(({ instruction, response }) => ({ instruction, response })), { tokens: true });
    } catch (e) {
      // One bad pair must not sink its batch: score them one by one to find it.
      scores = chunk.map((p) => {
        try {
          return scorer.scorePair(p.instruction, p.response, { tokens: true });
        } catch (err) {
          fail('score', err, p.key);
          return null;
        }
      });
    }
    chunk.forEach((p, j) => scores[j] && postMessage({ type: 'scored', key: p.key, score: scores[j] }));
    postMessage({ type: 'score-progress', done: Math.min(i + BATCH, items.length), total: items.length, seconds: (performance.now() - t0) / 1000, threads: scorer.threads });
  }
  postMessage({ type: 'score-done', seconds: (performance.now() - t0) / 1000, pairs: items.length, threads: scorer.threads });
  reportMemory(exports);
}

/** The engine reads the records (Alpaca, prompt/response, chat messages), so the page needs no wasm instance of its own. */
async function parse({ id, text, source }) {
  await ready;
  const pairs = [];
  const errors = [];
  text.split(/\r?\n/).forEach((line, i) => {
    if (!line.trim()) return;
    try {
      const { instruction, response } = parseRecord(line, i + 1);
      pairs.push({ record: JSON.parse(line), instruction, response });
    } catch (e) {
      errors.push(`${source}: ${e.message}`);
    }
  });
  postMessage({ type: 'parsed', id, pairs, errors });
}

onmessage = async ({ data }) => {
  try {
    if (data.type === 'parse') return await parse(data);
    if (data.type === 'load') return await loadModel(data);
    if (data.type === 'threads') {
      await ready;
      threads = data.threads;
      if (model) {
        scorer?.free();
        scorer = new Scorer(model, null, { threads });
      }
      return postMessage({ type: 'threads', threads: scorer ? scorer.threads : Math.min(threads || poolThreads, poolThreads) });
    }
    if (!scorer) throw new Error('load a model first');
    if (data.type === 'score') return await score(data.items);
    if (data.type === 'detail') {
      postMessage({ type: 'detail', key: data.key, score: scorer.scorePair(data.instruction, data.response, { tokens: true }) });
    } else if (data.type === 'guess') {
      postMessage({ type: 'guess', key: data.key, text: scorer.generate(data.response, { maxNewTokens: 64 }) });
    }
  } catch (e) {
    fail(data.type, e, data.key);
  }
};
