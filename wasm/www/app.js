// The annotation tool's page: pairs, labels and notes live here (and in
// localStorage); the worker (worker.js) owns the model and does the scoring.
const STORE = 'main-annotate-v1';
const $ = (id) => document.getElementById(id);
const worker = new Worker(new URL('./worker.js', import.meta.url), { type: 'module' });

/** @type {{pairs: any[], nextKey: number, selected: number|null, sort: {col: string, dir: number}}} */
let state = load();
/** Per-token detail by pair key: large, so kept in memory only (re-scored on demand after a reload). */
const details = new Map();
let modelReady = false;
let saveTimer = null;

function load() {
  try {
    const s = JSON.parse(localStorage.getItem(STORE));
    if (s && Array.isArray(s.pairs)) return s;
  } catch {
    // A broken store starts afresh rather than blocking the tool.
  }
  return { pairs: [], nextKey: 1, selected: null, sort: { col: 'index', dir: 1 } };
}

function save() {
  clearTimeout(saveTimer);
  saveTimer = setTimeout(() => {
    try {
      localStorage.setItem(STORE, JSON.stringify(state));
    } catch (e) {
      showError(`Could not save to browser storage: ${e.message}`);
    }
  }, 100);
}

function showError(msg) {
  const div = document.createElement('div');
  div.textContent = msg;
  $('errors').append(div);
}

const byKey = (key) => state.pairs.find((p) => p.key === key);

// ---------------------------------------------------------------------------
// Model
// ---------------------------------------------------------------------------

function loadModel(src) {
  modelReady = false;
  $('model-status').textContent = 'Loading model…';
  $('model-progress').value = 0;
  worker.postMessage({ type: 'load', ...src });
}

$('model-file').addEventListener('change', (e) => e.target.files[0] && loadModel({ file: e.target.files[0] }));
$('model-load').addEventListener('click', () => {
  const url = $('model-url').value.trim();
  if (url) loadModel({ url: new URL(url, location.href).href });
  else showError('Enter a model URL first.');
});

// ---------------------------------------------------------------------------
// Pairs in
// ---------------------------------------------------------------------------

let parseId = 0;
const parses = new Map();

/** Parsing happens in the worker (the engine's reader of the three formats). */
function addJsonl(text, source) {
  const id = ++parseId;
  worker.postMessage({ type: 'parse', id, text, source });
  return new Promise((done) => parses.set(id, done));
}

function addParsed({ id, pairs, errors }) {
  const added = pairs.map(({ record, instruction, response }) => {
    const p = { key: state.nextKey++, index: state.pairs.length + 1, record, instruction, response, score: null, label: null, note: '' };
    state.pairs.push(p);
    return p;
  });
  errors.slice(0, 20).forEach(showError);
  if (errors.length > 20) showError(`…and ${errors.length - 20} more invalid lines`);
  if (state.selected === null && added.length) state.selected = added[0].key;
  save();
  render();
  scorePending();
  parses.get(id)?.();
  parses.delete(id);
}

$('pairs-file').addEventListener('change', async (e) => {
  const f = e.target.files[0];
  if (f) await addJsonl(await f.text(), f.name);
  e.target.value = '';
});
$('pairs-add').addEventListener('click', async () => {
  await addJsonl($('pairs-paste').value, 'pasted text');
  $('pairs-paste').value = '';
});

let scoring = false;
function scorePending() {
  if (!modelReady || scoring) return;
  const items = state.pairs.filter((p) => !p.score && !p.failed).map(({ key, instruction, response }) => ({ key, instruction, response }));
  if (!items.length) return;
  scoring = true;
  $('threads').disabled = true; // a new thread count applies between runs
  delete document.body.dataset.scoring;
  $('score-progress').max = items.length;
  $('score-progress').value = 0;
  $('score-status').textContent = `Scoring ${items.length} pairs…`;
  worker.postMessage({ type: 'score', items });
}

// ---------------------------------------------------------------------------
// Worker replies
// ---------------------------------------------------------------------------

const stripDetail = ({ responseDetail, instructionDetail, ...rest }) => rest;

worker.onmessage = ({ data }) => {
  switch (data.type) {
    case 'ready':
      showThreads(data);
      document.body.dataset.worker = 'ready';
      break;
    case 'threads':
      document.body.dataset.threads = data.threads;
      $('threads').disabled = poolThreads === 1;
      break;
    case 'parsed':
      addParsed(data);
      break;
    case 'load-progress':
      $('model-progress').max = data.total;
      $('model-progress').value = data.loaded;
      $('model-status').textContent = `Loading model… ${(data.loaded / 1e6).toFixed(0)} / ${(data.total / 1e6).toFixed(0)} MB`;
      break;
    case 'model':
      modelReady = true;
      $('model-progress').max = 1;
      $('model-progress').value = 1;
      $('model-status').textContent = `Model ready: ${data.description}`;
      document.body.dataset.threads = data.threads;
      document.body.dataset.model = 'ready';
      scorePending();
      renderDetail();
      break;
    case 'scored': {
      const p = byKey(data.key);
      if (!p) break;
      p.score = stripDetail(data.score);
      details.set(p.key, data.score);
      save();
      renderRow(p);
      if (p.key === state.selected) renderDetail();
      break;
    }
    case 'score-progress':
      $('score-progress').value = data.done;
      $('score-status').textContent = `Scored ${data.done} / ${data.total}: ${(data.done / data.seconds).toFixed(2)} pairs/s on ${plural(data.threads, 'thread')}`;
      break;
    case 'score-done':
      scoring = false;
      $('threads').disabled = poolThreads === 1;
      $('score-status').textContent = `Scored ${data.pairs} pairs in ${data.seconds.toFixed(1)} s: ${(data.pairs / data.seconds).toFixed(2)} pairs/s on ${plural(data.threads, 'thread')}.`;
      document.body.dataset.pairsPerSecond = data.pairs / data.seconds;
      document.body.dataset.scoreThreads = data.threads;
      document.body.dataset.scoring = 'done';
      render();
      scorePending(); // pairs added while scoring
      break;
    case 'detail':
      details.set(data.key, data.score);
      if (data.key === state.selected) renderDetail();
      break;
    case 'guess':
      if (data.key === state.selected) $('guess-out').textContent = data.text;
      $('guess').disabled = false;
      break;
    case 'memory':
      document.body.dataset.wasmBytes = data.wasmBytes;
      break;
    case 'error':
      if (data.during === 'load') $('model-status').textContent = 'Model failed to load.';
      if (data.during === 'score' && data.key) {
        const p = byKey(data.key);
        if (p) p.failed = data.message;
      }
      if (data.during === 'guess') $('guess').disabled = false;
      showError(`${data.during}${data.key ? ` (pair ${byKey(data.key)?.index ?? data.key})` : ''}: ${data.message}`);
      break;
  }
};
worker.onerror = (e) => showError(`worker: ${e.message}`);

const plural = (n, word) => `${n} ${word}${n === 1 ? '' : 's'}`;

/** The thread choice, and why there is none when the page is not cross-origin isolated. */
let poolThreads = 1;
function showThreads({ isolated, poolThreads: pool }) {
  poolThreads = pool;
  document.body.dataset.isolated = isolated;
  document.body.dataset.poolThreads = poolThreads;
  const select = $('threads');
  select.replaceChildren(
    ...Array.from({ length: poolThreads }, (_, i) => {
      const n = poolThreads - i;
      const o = new Option(n === poolThreads ? `${n} (all cores)` : String(n), String(n));
      return o;
    }),
  );
  select.disabled = poolThreads === 1;
  $('threads-status').textContent = isolated
    ? `Scoring on ${plural(poolThreads, 'thread')}, one per core.`
    : 'One thread only: this page is not cross-origin isolated (its server sends no COOP/COEP headers), ' +
      'so the browser allows no shared-memory threads. Serve it with scripts/annotate to score on every core.';
  $('threads-status').classList.toggle('warning', !isolated);
}

$('threads').addEventListener('change', (e) => {
  e.target.disabled = true; // until the worker has its new scorer
  delete document.body.dataset.threads;
  worker.postMessage({ type: 'threads', threads: Number(e.target.value) });
});

// ---------------------------------------------------------------------------
// List
// ---------------------------------------------------------------------------

const fmt = (v) => (typeof v === 'number' ? v.toFixed(3) : '…');

function visiblePairs() {
  const text = $('filter-text').value.trim().toLowerCase();
  const label = $('filter-label').value;
  const min = $('filter-min').value === '' ? null : Number($('filter-min').value);
  const { col, dir } = state.sort;
  const value = (p) => (col === 'index' ? p.index : col === 'label' ? p.label ?? '' : p.score?.[col] ?? -Infinity);
  return state.pairs
    .filter((p) => !text || p.instruction.toLowerCase().includes(text) || p.response.toLowerCase().includes(text))
    .filter((p) => label === 'all' || (label === 'none' ? !p.label : p.label === label))
    .filter((p) => min === null || (p.score && p.score.alignment >= min))
    .sort((a, b) => {
      const [x, y] = [value(a), value(b)];
      return (x < y ? -1 : x > y ? 1 : a.index - b.index) * dir;
    });
}

function rowHtml(tr, p) {
  tr.dataset.key = p.key;
  tr.setAttribute('aria-selected', String(p.key === state.selected));
  tr.tabIndex = p.key === state.selected ? 0 : -1;
  tr.replaceChildren();
  const cells = [
    [String(p.index), 'num'],
    [p.failed ? 'error' : fmt(p.score?.alignment), 'num alignment'],
    [fmt(p.score?.fwdPmi), 'num fwd'],
    [fmt(p.score?.revPmi), 'num rev'],
    [p.label ?? '', `label label-${p.label ?? 'none'}`],
    [p.instruction, 'text'],
  ];
  for (const [text, cls] of cells) {
    const td = document.createElement('td');
    td.className = cls;
    td.textContent = text;
    tr.append(td);
  }
  if (p.score) {
    tr.dataset.alignment = p.score.alignment;
    tr.dataset.fwd = p.score.fwdPmi;
    tr.dataset.rev = p.score.revPmi;
  }
}

function renderRow(p) {
  const tr = document.querySelector(`#pairs tbody tr[data-key="${p.key}"]`);
  if (tr) rowHtml(tr, p);
}

function render() {
  const rows = visiblePairs().map((p) => {
    const tr = document.createElement('tr');
    rowHtml(tr, p);
    return tr;
  });
  document.querySelector('#pairs tbody').replaceChildren(...rows);
  for (const th of document.querySelectorAll('#pairs th')) {
    const b = th.querySelector('button');
    if (b) th.setAttribute('aria-sort', b.dataset.sort === state.sort.col ? (state.sort.dir > 0 ? 'ascending' : 'descending') : 'none');
  }
  const n = state.pairs.length;
  const labelled = state.pairs.filter((p) => p.label).length;
  $('counts').textContent = `${rows.length} shown of ${n}; ${labelled} labelled`;
  renderDetail();
}

document.querySelector('#pairs thead').addEventListener('click', (e) => {
  const col = e.target.closest('button')?.dataset.sort;
  if (!col) return;
  state.sort = { col, dir: state.sort.col === col ? -state.sort.dir : col === 'index' ? 1 : -1 };
  save();
  render();
});
document.querySelector('#pairs tbody').addEventListener('click', (e) => {
  const tr = e.target.closest('tr');
  if (tr) select(Number(tr.dataset.key));
});
for (const id of ['filter-text', 'filter-label', 'filter-min']) $(id).addEventListener('input', render);

function select(key) {
  state.selected = key;
  save();
  for (const tr of document.querySelectorAll('#pairs tbody tr')) {
    const on = Number(tr.dataset.key) === key;
    tr.setAttribute('aria-selected', String(on));
    tr.tabIndex = on ? 0 : -1;
    if (on) tr.scrollIntoView({ block: 'nearest' });
  }
  $('guess-out').textContent = '';
  renderDetail();
}

function move(step) {
  const list = visiblePairs();
  if (!list.length) return;
  const i = list.findIndex((p) => p.key === state.selected);
  const j = i < 0 ? 0 : Math.max(0, Math.min(list.length - 1, i + step));
  select(list[j].key);
}

// ---------------------------------------------------------------------------
// Detail: scores, heat maps, guess, labels
// ---------------------------------------------------------------------------

/** Red (the other text makes the token less likely) through white to blue (more likely), clipped at ±3 nats. */
function heatColour(pmi) {
  const t = Math.max(-1, Math.min(1, pmi / 3));
  const mix = (a) => Math.round(255 + (a - 255) * Math.abs(t));
  return t >= 0 ? `rgb(${mix(60)},${mix(130)},${mix(230)})` : `rgb(${mix(230)},${mix(80)},${mix(80)})`;
}

function heat(container, tokens, fallback) {
  container.replaceChildren();
  if (!tokens) {
    container.textContent = fallback;
    return;
  }
  for (const t of tokens) {
    const s = document.createElement('span');
    s.textContent = t.text;
    s.style.backgroundColor = heatColour(t.pmi);
    if (Math.abs(t.pmi) > 1.8) s.style.color = '#fff'; // dark backgrounds: keep the text readable
    s.title = `${JSON.stringify(t.text)}: cond ${t.cond.toFixed(3)}, uncond ${t.uncond.toFixed(3)}, difference ${t.pmi.toFixed(3)} nats`;
    s.dataset.pmi = t.pmi;
    container.append(s);
  }
}

const requested = new Set();

function renderDetail() {
  const p = byKey(state.selected);
  $('detail-index').textContent = p ? `#${p.index}` : '';
  $('note').value = p?.note ?? '';
  $('note').disabled = !p;
  const scores = $('scores');
  scores.replaceChildren();
  if (!p) {
    $('instruction').textContent = '';
    $('response').textContent = '';
    return;
  }
  if (p.score) {
    const s = p.score;
    for (const [name, v] of [['alignment', s.alignment], ['forward PMI', s.fwdPmi], ['reverse PMI', s.revPmi], ['IFD', s.ifd], ['reverse IFD', s.rifd], ['semantic', s.semantic], ['structural', s.structural]]) {
      const span = document.createElement('span');
      span.innerHTML = `${name} <b></b>`;
      span.querySelector('b').textContent = v.toFixed(3);
      scores.append(span);
    }
    if (s.truncated) scores.append('(truncated)');
  }
  const d = details.get(p.key);
  if (!d && p.score && modelReady && !requested.has(p.key)) {
    requested.add(p.key);
    worker.postMessage({ type: 'detail', key: p.key, instruction: p.instruction, response: p.response });
  }
  const why = modelReady ? 'Scoring…' : 'Load the model to see the per-token colours.';
  heat($('instruction'), d?.instructionDetail, `${p.instruction}\n\n(${why})`);
  heat($('response'), d?.responseDetail, `${p.response}\n\n(${why})`);
}

function label(value) {
  const p = byKey(state.selected);
  if (!p) return;
  p.label = value;
  save();
  renderRow(p);
  $('counts').textContent = `${visiblePairs().length} shown of ${state.pairs.length}; ${state.pairs.filter((q) => q.label).length} labelled`;
  move(1);
}

$('accept').addEventListener('click', () => label('accept'));
$('reject').addEventListener('click', () => label('reject'));
$('skip').addEventListener('click', () => label('skip'));
$('next').addEventListener('click', () => move(1));
$('prev').addEventListener('click', () => move(-1));
$('note').addEventListener('input', () => {
  const p = byKey(state.selected);
  if (p) {
    p.note = $('note').value;
    save();
  }
});
$('guess').addEventListener('click', () => {
  const p = byKey(state.selected);
  if (!p) return;
  if (!modelReady) return showError('Load a model first.');
  $('guess').disabled = true;
  $('guess-out').textContent = 'Thinking…';
  worker.postMessage({ type: 'guess', key: p.key, response: p.response });
});

document.addEventListener('keydown', (e) => {
  // The keys label pairs: not while the data set view is open instead.
  if (e.ctrlKey || e.metaKey || e.altKey || $('annotate-view').hidden) return;
  const typing = e.target.closest('input, textarea, select');
  if (typing) {
    if (e.key === 'Escape' && e.target.id === 'note') e.target.blur();
    return;
  }
  const actions = { a: () => label('accept'), r: () => label('reject'), s: () => label('skip'), j: () => move(1), k: () => move(-1), g: () => $('guess').click(), n: () => $('note').focus() };
  const f = actions[e.key];
  if (f) {
    e.preventDefault();
    f();
  }
});

// ---------------------------------------------------------------------------
// Export and reset
// ---------------------------------------------------------------------------

const snake = (k) => k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** Each input record with the CLI's "alignment" object (snake_case, as main-score writes it) and the annotation. */
function exportJsonl() {
  return state.pairs
    .map((p) => {
      const alignment = p.score ? Object.fromEntries(Object.entries(p.score).map(([k, v]) => [snake(k), v])) : null;
      return JSON.stringify({ ...p.record, alignment, annotation: { label: p.label, note: p.note } });
    })
    .join('\n') + '\n';
}

$('export').addEventListener('click', () => {
  const a = document.createElement('a');
  a.href = URL.createObjectURL(new Blob([exportJsonl()], { type: 'application/x-ndjson' }));
  a.download = 'annotated.jsonl';
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(a.href), 10_000);
});
$('clear').addEventListener('click', () => {
  if (!confirm('Remove all pairs, labels and notes from this browser?')) return;
  state = { pairs: [], nextKey: 1, selected: null, sort: { col: 'index', dir: 1 } };
  details.clear();
  save();
  render();
});

render();
