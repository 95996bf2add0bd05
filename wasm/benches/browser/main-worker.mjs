// MAIN in a worker: the threaded package (a pool of `threads` Web Workers)
// when the page is cross-origin isolated, else the one-thread package.
const post = (m) => postMessage(m);

onmessage = async ({ data: { modelUrl, pairs, threads, precision = 'exact', maxTokens = 1024, batch = 4 } }) => {
  try {
    const threaded = self.crossOriginIsolated && threads > 1;
    const pkg = await import(threaded ? '/pkg-threads/main_wasm.js' : '/pkg/main_wasm.js');
    await pkg.default();
    if (threaded) await pkg.initThreadPool(threads);
    const bytes = new Uint8Array(await (await fetch(modelUrl)).arrayBuffer());
    const model = pkg.Model.fromBytes(bytes);
    const scorer = new pkg.Scorer(model, null, { threads, maxTokens, precision });
    const views = pairs.map((p) => model.viewTokens(p.instruction, p.response, maxTokens));
    // Warm-up: one pair, untimed (the other engines get the same).
    scorer.scorePair(pairs[0].instruction, pairs[0].response);
    const scores = [];
    const t0 = performance.now();
    for (let i = 0; i < pairs.length; i += batch) scores.push(...scorer.scoreBatch(pairs.slice(i, i + batch)));
    const seconds = (performance.now() - t0) / 1000;
    post({ type: 'result', result: { seconds, threadsUsed: scorer.threads, views, scores } });
  } catch (e) {
    post({ type: 'error', message: e instanceof Error ? `${e.message}\n${e.stack}` : String(e) });
  }
};
