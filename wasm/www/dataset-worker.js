// The data set view's worker: reads a scored JSONL file and has the engine
// summarise it (main-wasm's reportData: the same statistics as
// `main-score report`), so a file of many megabytes never freezes the page.
// It loads the one-thread build (pkg/), which runs in any page, isolated or
// not, and stays apart from worker.js, which may be busy scoring.
//
// Message in:  {id, file: File, provenance: File | null, params: {…}}   (params: reportData's, as JSON;
//               the provenance file's object goes into params.provenance)
// Messages out: {id, type: 'loaded', name, bytes: ArrayBuffer, report, records, seconds}
//               (records: reportData's columns, `fields` as {name: Float64Array})
//               {id, type: 'error', message}
// `bytes` is the file itself, handed to the page (transferred, not copied):
// its export slices the kept lines out of it byte for byte.
let reportData;
const ready = import('../pkg/main_wasm.js').then(async (pkg) => {
  await pkg.default();
  reportData = pkg.reportData;
});

/** The object of a .provenance.json file; an error names the file. */
async function readProvenance(file) {
  try {
    return JSON.parse(await file.text());
  } catch (e) {
    throw new Error(`${file.name}: not a provenance file (${e.message})`);
  }
}

onmessage = async ({ data: { id, file, provenance, params } }) => {
  try {
    await ready;
    const t0 = performance.now();
    const all = { ...params };
    if (provenance) all.provenance = await readProvenance(provenance);
    const bytes = new Uint8Array(await file.arrayBuffer());
    const { report, records } = reportData(bytes, JSON.stringify(all));
    // Each score column as a Float64Array (NaN where missing): compact, and
    // compared with a threshold without a null check.
    const fields = {};
    for (const { name, values } of records.fields) fields[name] = Float64Array.from(values, (v) => (v === null ? NaN : v));
    const seconds = (performance.now() - t0) / 1000;
    const out = { ...records, fields };
    postMessage({ id, type: 'loaded', name: file.name, bytes: bytes.buffer, report, records: out, seconds }, [bytes.buffer, ...Object.values(fields).map((f) => f.buffer)]);
  } catch (e) {
    // The engine's errors name the file (params.source) and the line; others get the file's name here.
    const message = e instanceof Error ? e.message : String(e);
    const name = file?.name ?? 'file';
    postMessage({ id, type: 'error', message: message.includes(name) ? message : `${name}: ${message}` });
  }
};
