// The data set view (issue 23): open a JSONL file scored by `main-score
// score`, see its report (the charts of `main-score report`, drawn by the
// same render.js on the same engine data), move a threshold on one score
// field, browse the records and export the kept ones byte for byte.
//
// The engine reads and summarises the file (main-wasm's reportData, in
// dataset-worker.js); this file holds only what the page does with it: the
// threshold, the table and the export. A record is kept when its value of
// the threshold's field is at or above the threshold (a missing value is
// never kept): the rule of `main-score score --min-alignment` and `report
// --min`.
const $ = (id) => document.getElementById(id);
const worker = new Worker(new URL('./dataset-worker.js', import.meta.url), { type: 'module' });

/** Rows of the table per page: a page stays quick to draw whatever the file's size. */
const PAGE_ROWS = 100;
/** Characters of a response shown in its cell (the whole text is its tooltip). */
const RESPONSE_CHARS = 160;
/** The score columns of the table, beside the threshold's field. */
const MAIN_COLUMNS = ['alignment', 'fwd_pmi', 'rev_pmi'];

/**
 * The loaded file: `bytes` (the file as it was), `report` (the engine's
 * ReportData), `rec` (the records' columns: fileLine, line, start, end,
 * instruction, response, truncated, fields: {name: Float64Array, NaN where
 * missing}), `n` records. Replaced only when another file loads.
 */
let ds = null;
let threshold = { field: 'alignment', value: 0 };
let sort = { col: 'fileLine', dir: 1 };
let pageIndex = 0;
/** The record indices the table shows, sorted and filtered. */
let shown = [];
let loadId = 0;

// ---------------------------------------------------------------------------
// The chart renderer and its stylesheet, copied from the engine by scripts/build-wasm
// ---------------------------------------------------------------------------

const RENDERER = '../pkg/report-render.js';
const rendererReady = new Promise((ok, fail) => {
  const css = document.createElement('link');
  css.rel = 'stylesheet';
  css.href = '../pkg/report.css';
  document.head.append(css);
  const s = document.createElement('script');
  s.src = RENDERER;
  s.onload = () => (globalThis.MainReport ? ok(globalThis.MainReport) : fail(new Error(`${RENDERER} defines no MainReport`)));
  s.onerror = () => fail(new Error(`cannot load ${RENDERER}: run scripts/build-wasm, which copies it from engine/src/report/render.js`));
  document.head.append(s);
});
rendererReady.catch(() => {}); // reported when a file is opened

function showError(msg) {
  const div = document.createElement('div');
  div.className = 'dataset-error';
  div.textContent = msg;
  $('errors').append(div);
}

const fmt = (v, digits = 3) => (Number.isNaN(v) ? '–' : Number.isInteger(v) ? String(v) : v.toFixed(digits));
const count = (n) => n.toLocaleString('en-US');

// ---------------------------------------------------------------------------
// Loading
// ---------------------------------------------------------------------------

/** A scored file's provenance is FILE.provenance.json (main-score score writes it beside the output). */
const isProvenance = (f) => f.name.endsWith('.provenance.json');

$('dataset-file').addEventListener('change', (e) => {
  const files = [...e.target.files];
  e.target.value = ''; // the same file may be opened again after a fix
  if (!files.length) return;
  const scored = files.filter((f) => !isProvenance(f));
  const provenance = files.filter(isProvenance);
  if (scored.length !== 1 || provenance.length > 1) {
    showError(`Open one scored JSONL file, and at most one .provenance.json with it (got ${files.map((f) => f.name).join(', ')}).`);
    document.body.dataset.dataset = 'error';
    return;
  }
  const [file] = scored;
  const id = ++loadId;
  document.body.dataset.dataset = 'loading';
  $('dataset-status').textContent = `Reading ${file.name} (${(file.size / 1e6).toFixed(1)} MB)…`;
  worker.postMessage({ id, file, provenance: provenance[0] ?? null, params: { source: file.name } });
});

worker.onmessage = async ({ data }) => {
  if (data.id !== loadId) return; // a later file was opened meanwhile
  if (data.type === 'error') {
    // The previous file, its threshold and its table stay as they were.
    showError(data.message);
    $('dataset-status').textContent = ds ? `Could not read the file; still showing ${ds.name}.` : 'Could not read the file.';
    document.body.dataset.dataset = 'error';
    return;
  }
  let MainReport;
  try {
    MainReport = await rendererReady;
  } catch (e) {
    showError(e.message);
    document.body.dataset.dataset = 'error';
    return;
  }
  for (const div of document.querySelectorAll('#errors .dataset-error')) div.remove();
  const { records } = data;
  ds = { name: data.name, bytes: new Uint8Array(data.bytes), report: data.report, rec: records, n: records.line.length, MainReport };
  ds.search = null; // lower-cased texts, made on the first search
  chooseDefaultThreshold();
  sort = { col: 'fileLine', dir: 1 };
  pageIndex = 0;
  $('dataset-status').textContent = `${ds.name}: ${count(ds.n)} records, read in ${data.seconds.toFixed(2)} s.`;
  renderAll();
  document.body.dataset.dataset = 'ready';
};
worker.onerror = (e) => showError(`data set worker: ${e.message}`);

/**
 * The field select offers the report's fields that have values; the first
 * threshold is the one the file's own filter recorded (its provenance),
 * else the median of `alignment`, which keeps about half.
 */
function chooseDefaultThreshold() {
  const { report, rec } = ds;
  const select = $('threshold-field');
  const fields = report.fields.filter((f) => rec.fields[f] && report.stats.find((s) => s.field === f)?.count > 0);
  select.replaceChildren(...fields.map((f) => new Option(f, f)));
  const recorded = report.filter?.thresholds.find((t) => t.keep === 'above' && fields.includes(t.field));
  if (recorded) {
    threshold = { field: recorded.field, value: recorded.value };
  } else {
    const field = fields.includes('alignment') ? 'alignment' : fields[0];
    threshold = { field, value: median(field) };
  }
  select.value = threshold.field;
  for (const id of ['threshold-field', 'threshold-value', 'dataset-export']) $(id).disabled = fields.length === 0;
}

function median(field) {
  const p50 = ds.report.stats.find((s) => s.field === field)?.percentiles.find(([p]) => p === 50)?.[1];
  return p50 ?? 0;
}

// ---------------------------------------------------------------------------
// Threshold
// ---------------------------------------------------------------------------

const isKept = (i) => ds.rec.fields[threshold.field][i] >= threshold.value; // NaN: false

function keptCount() {
  const v = ds.rec.fields[threshold.field];
  let n = 0;
  for (let i = 0; i < v.length; i++) if (v[i] >= threshold.value) n++;
  return n;
}

function showKept() {
  const kept = keptCount();
  const share = ds.n ? kept / ds.n : 0;
  const out = $('kept');
  out.textContent = `Kept ${count(kept)} of ${count(ds.n)} (${(100 * share).toFixed(1)}%)`;
  out.dataset.kept = kept;
  out.dataset.of = ds.n;
  out.dataset.field = threshold.field;
  out.dataset.threshold = threshold.value;
  $('threshold-value').value = String(threshold.value);
}

/**
 * The charts, in three parts around the table: the histograms (draggable),
 * the fwd_pmi / rev_pmi scatter, and the rest of the report below the
 * table. A drag redraws none of them: render.js moves its line, the dots
 * are recoloured in place, and everything is drawn again once it ends.
 */
function renderCharts() {
  // The share counted over every record: render.js shows it exact (its own is the bars' estimate).
  const marked = { field: threshold.field, value: threshold.value, keep: 'above', share: ds.n ? keptCount() / ds.n : 0 };
  const draw = (id, sections, more = {}) => ds.MainReport.render($(id), ds.report, { threshold: marked, sections, ...more });
  draw('dataset-hists', ['header', 'histograms'], { onThreshold: (field, value) => dragTo(field, value) });
  draw('dataset-scatter', ['quadrants']);
  draw('dataset-more', ['length', 'summary', 'examples', 'duplicates', 'conversations', 'provenance']);
}
// render.js moves the line while the pointer drags; once it lets go, the
// charts are drawn again (the bars' kept colours, the shares).
$('dataset-hists').addEventListener('pointerup', (e) => e.target.closest('svg.main-hist') && renderAll());

/** The sampled dots' values of the threshold's field, by the record's line (render.js's data-line). */
function dotValues() {
  const { columns, rows } = ds.report.sample;
  const li = columns.indexOf('line');
  const fi = columns.indexOf(threshold.field);
  return new Map(rows.map((r) => [String(r[li]), r[fi]]));
}

function recolourDots() {
  const values = dotValues();
  for (const dot of document.querySelectorAll('#dataset-view circle.dot')) {
    const v = values.get(dot.dataset.line);
    dot.setAttribute('class', v !== null && v !== undefined && v >= threshold.value ? 'dot kept' : 'dot dropped');
  }
}

let tableTimer = null;
/** Called by render.js on each move of a drag: the count now, the dots each frame, the table once the hand rests. */
function dragTo(field, value) {
  // Four significant digits: a threshold a person can read and type again.
  threshold = { field, value: Number(value.toPrecision(4)) };
  $('threshold-field').value = field;
  showKept();
  requestAnimationFrame(recolourDots);
  clearTimeout(tableTimer);
  tableTimer = setTimeout(() => renderTable(true), 120);
}

$('threshold-field').addEventListener('change', (e) => {
  threshold = { field: e.target.value, value: median(e.target.value) };
  renderAll();
});
$('threshold-value').addEventListener('change', (e) => {
  const v = Number(e.target.value);
  if (e.target.value.trim() === '' || !Number.isFinite(v)) {
    showError(`threshold: '${e.target.value}' is not a number`);
    e.target.value = String(threshold.value);
    return;
  }
  threshold = { ...threshold, value: v };
  renderAll();
});

// ---------------------------------------------------------------------------
// Table: sorted, filtered, one page at a time
// ---------------------------------------------------------------------------

/** [key, header, numeric]: the file's line, the texts, the main scores, the threshold's field if another, kept. */
function columns() {
  const scores = MAIN_COLUMNS.filter((f) => ds.rec.fields[f]);
  if (!scores.includes(threshold.field)) scores.push(threshold.field);
  return [['fileLine', 'Line', true], ['instruction', 'Instruction', false], ['response', 'Response', false], ...scores.map((f) => [f, f, true]), ['kept', 'Kept', true]];
}

function sortValue(col) {
  if (col === 'fileLine') return (i) => ds.rec.fileLine[i];
  if (col === 'kept') return (i) => (isKept(i) ? 1 : 0);
  if (col === 'instruction' || col === 'response') return (i) => ds.rec[col][i];
  const v = ds.rec.fields[col];
  return (i) => v[i];
}

function visible() {
  const text = $('records-text').value.trim().toLowerCase();
  const which = $('records-kept').value;
  if (text && !ds.search) ds.search = ds.rec.instruction.map((s, i) => `${s}\n${ds.rec.response[i]}`.toLowerCase());
  const out = [];
  for (let i = 0; i < ds.n; i++) {
    if (text && !ds.search[i].includes(text)) continue;
    if (which !== 'all' && isKept(i) !== (which === 'kept')) continue;
    out.push(i);
  }
  const key = sortValue(sort.col);
  const { dir } = sort;
  // Missing values last whichever way; ties in file order.
  return out.sort((a, b) => {
    const [x, y] = [key(a), key(b)];
    const xn = typeof x === 'number' && Number.isNaN(x);
    const yn = typeof y === 'number' && Number.isNaN(y);
    if (xn || yn) return xn === yn ? a - b : xn ? 1 : -1;
    return (x < y ? -1 : x > y ? 1 : 0) * dir || a - b;
  });
}

function renderHeader() {
  const tr = document.querySelector('#records thead tr');
  tr.replaceChildren(
    ...columns().map(([key, label]) => {
      const th = document.createElement('th');
      th.scope = 'col';
      th.setAttribute('aria-sort', key === sort.col ? (sort.dir > 0 ? 'ascending' : 'descending') : 'none');
      const b = document.createElement('button');
      b.type = 'button';
      b.dataset.sort = key;
      b.textContent = label;
      th.append(b);
      return th;
    }),
  );
}

/** Draws the table; `keepPage`: stay on this page (a threshold moved) rather than go to the first. */
function renderTable(keepPage = false) {
  if (!ds) return;
  shown = visible();
  const pages = Math.max(1, Math.ceil(shown.length / PAGE_ROWS));
  pageIndex = keepPage ? Math.min(pageIndex, pages - 1) : 0;
  renderHeader();
  const cols = columns();
  const rows = shown.slice(pageIndex * PAGE_ROWS, (pageIndex + 1) * PAGE_ROWS).map((i) => {
    const tr = document.createElement('tr');
    tr.dataset.index = i;
    tr.dataset.line = ds.rec.fileLine[i];
    const kept = isKept(i);
    tr.dataset.kept = kept;
    for (const [key, , numeric] of cols) {
      const td = document.createElement('td');
      td.dataset.col = key;
      if (key === 'fileLine') td.textContent = String(ds.rec.fileLine[i]);
      else if (key === 'kept') td.textContent = kept ? 'kept' : 'dropped';
      else if (key === 'instruction') td.textContent = ds.rec.instruction[i];
      else if (key === 'response') {
        const r = ds.rec.response[i];
        td.textContent = r.length > RESPONSE_CHARS ? `${r.slice(0, RESPONSE_CHARS)}…` : r;
        td.title = r;
      } else {
        const v = ds.rec.fields[key][i];
        td.textContent = fmt(v);
        td.dataset.value = Number.isNaN(v) ? '' : String(v);
      }
      td.className = numeric ? 'num' : 'text';
      if (key === 'kept') td.className = kept ? 'kept' : 'dropped';
      tr.append(td);
    }
    return tr;
  });
  document.querySelector('#records tbody').replaceChildren(...rows);
  $('records-count').textContent = `${count(shown.length)} of ${count(ds.n)} records shown`;
  $('records-count').dataset.shown = shown.length;
  $('records-page').textContent = `page ${pageIndex + 1} of ${pages}`;
  $('records-prev').disabled = pageIndex === 0;
  $('records-next').disabled = pageIndex >= pages - 1;
}

document.querySelector('#records thead').addEventListener('click', (e) => {
  const col = e.target.closest('button')?.dataset.sort;
  if (!col || !ds) return;
  // Scores start with the highest, lines and texts with the first.
  const first = ['fileLine', 'instruction', 'response'].includes(col) ? 1 : -1;
  sort = { col, dir: sort.col === col ? -sort.dir : first };
  renderTable();
});
$('records-text').addEventListener('input', () => renderTable());
$('records-kept').addEventListener('change', () => renderTable());
$('records-prev').addEventListener('click', () => {
  pageIndex--;
  renderTable(true);
});
$('records-next').addEventListener('click', () => {
  pageIndex++;
  renderTable(true);
});

function renderAll() {
  showKept();
  renderCharts();
  renderTable(true);
}

// ---------------------------------------------------------------------------
// Export: the kept lines exactly as they were, in file order
// ---------------------------------------------------------------------------

$('dataset-export').addEventListener('click', () => {
  if (!ds) return;
  const parts = [];
  for (let i = 0; i < ds.n; i++) if (isKept(i)) parts.push(ds.bytes.subarray(ds.rec.start[i], ds.rec.end[i]));
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob(parts, { type: 'application/x-ndjson' }));
  a.download = `${ds.name.replace(/\.jsonl?$/i, '')}.kept.jsonl`;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
});
