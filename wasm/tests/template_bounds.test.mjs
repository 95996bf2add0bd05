// A chat template is bounded in memory in Node's wasm build too (issue 21):
// a GGUF whose chat template doubles a string, nests `~` in macros, repeats
// a list, makes a namespace hold itself or recurses is refused by
// Model.fromBytes with a JS exception (never a wasm trap: a stack overflow
// would be one) naming the template and the limit, within a second, and
// the Node process that loads it under 200 MB at its peak (VmHWM, each
// case in a process of its own; not getrusage's maxRSS, which Linux carries
// across exec from the process that forked the child). Run by scripts/test-wasm with the other
// Node tests.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { fixtures, outDir, requireFile, root } from './common.mjs';

const pkgPath = requireFile(join(root, 'wasm', 'pkg-node', 'main_wasm.js'), 'run scripts/build-wasm');

const TEMPLATES = {
  doubling:
    '{% set ns = namespace(s="xxxxxxxx") %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}{{ ns.s }}',
  macro_concat:
    "{% macro twice(s) %}{{ s ~ s }}{% endmacro %}{% set ns = namespace(s='xxxxxxxx') %}{% for i in range(64) %}{% set ns.s = twice(ns.s) %}{% endfor %}{{ ns.s }}",
  list_times:
    '{% set ns = namespace(l=[1]) %}{% for i in range(64) %}{% set ns.l = ns.l * 2 %}{% endfor %}{{ ns.l | join }}',
  namespace_self:
    "{% set ns = namespace(a=0) %}{% set ns.a = ns %}{{ ns ~ '' }}{{ ns | string }}{{ ns | pprint }}{{ ns == ns }}",
  macro_recursion: '{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}',
};

// Fixed sizes of GGUF value types; 8 is a string, 9 an array.
const SIZES = { 0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8 };

function skip(view, off, kind) {
  if (kind in SIZES) return off + SIZES[kind];
  if (kind === 8) return off + 8 + Number(view.getBigUint64(off, true));
  if (kind === 9) {
    const item = view.getUint32(off, true);
    const n = Number(view.getBigUint64(off + 4, true));
    off += 12;
    if (item in SIZES) return off + n * SIZES[item];
    for (let i = 0; i < n; i++) off = skip(view, off, item);
    return off;
  }
  throw new Error(`GGUF value type ${kind}`);
}

/** The GGUF `src` with `template` as its tokenizer.chat_template. */
function withTemplate(src, template) {
  const view = new DataView(src.buffer, src.byteOffset, src.byteLength);
  const nTensors = view.getBigUint64(8, true);
  const nKv = Number(view.getBigUint64(16, true));
  let off = 24;
  let alignment = 32;
  const kvs = [];
  for (let i = 0; i < nKv; i++) {
    const start = off;
    const klen = Number(view.getBigUint64(off, true));
    const key = Buffer.from(src.subarray(off + 8, off + 8 + klen)).toString();
    off += 8 + klen;
    const kind = view.getUint32(off, true);
    off += 4;
    if (key === 'general.alignment') alignment = view.getUint32(off, true);
    off = skip(view, off, kind);
    if (key !== 'tokenizer.chat_template') kvs.push(src.subarray(start, off));
  }
  const infos = off;
  for (let i = 0n; i < nTensors; i++) {
    off += 8 + Number(view.getBigUint64(off, true));
    const nDims = view.getUint32(off, true);
    off += 4 + 8 * nDims + 4 + 8;
  }
  const data = src.subarray(Math.ceil(off / alignment) * alignment);
  const key = Buffer.from('tokenizer.chat_template');
  const value = Buffer.from(template);
  const kv = Buffer.alloc(8 + key.length + 12 + value.length);
  kv.writeBigUInt64LE(BigInt(key.length), 0);
  key.copy(kv, 8);
  kv.writeUInt32LE(8, 8 + key.length);
  kv.writeBigUInt64LE(BigInt(value.length), 12 + key.length);
  value.copy(kv, 20 + key.length);
  const head = Buffer.alloc(24);
  head.write('GGUF', 0);
  head.writeUInt32LE(view.getUint32(4, true), 4);
  head.writeBigUInt64LE(nTensors, 8);
  head.writeBigUInt64LE(BigInt(kvs.length + 1), 16);
  const parts = [head, ...kvs, kv, src.subarray(infos, off)];
  const len = parts.reduce((n, p) => n + p.length, 0);
  parts.push(Buffer.alloc((alignment - (len % alignment)) % alignment), data);
  return Buffer.concat(parts);
}

// One case in a process of its own: load, time the load, report the peaks.
const CHILD = `
const { readFileSync } = require('node:fs');
const pkg = require(process.argv[1]);
const bytes = new Uint8Array(readFileSync(process.argv[2]));
const start = performance.now();
let error = null, trap = false;
try { pkg.Model.fromBytes(bytes); } catch (e) { error = String(e.message); trap = e instanceof WebAssembly.RuntimeError; }
const ms = performance.now() - start;
// VmHWM starts again at exec; where /proc is missing, getrusage's peak.
let maxRSS = process.resourceUsage().maxRSS * 1024;
try { maxRSS = Number(/VmHWM:\\s+(\\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'))[1]) * 1024; } catch {}
console.log(JSON.stringify({ error, trap, ms, maxRSS }));
`;

const tiny = new Uint8Array(readFileSync(requireFile(join(fixtures, 'mistral-tiny', 'model.gguf'), 'run scripts/fetch-fixtures')));
const dir = join(outDir, 'template-bounds');
mkdirSync(dir, { recursive: true });

for (const [name, template] of Object.entries(TEMPLATES)) {
  test(`a runaway template (${name}) is refused by Model.fromBytes, fast and small`, () => {
    const path = join(dir, `${name}.gguf`);
    writeFileSync(path, withTemplate(tiny, template));
    const child = spawnSync(process.execPath, ['-e', CHILD, pkgPath, path], { encoding: 'utf8', timeout: 120_000 });
    assert.equal(child.status, 0, child.stderr);
    const out = JSON.parse(child.stdout.trim().split('\n').at(-1));
    console.log(name, out);
    assert.ok(out.error, 'the model loaded');
    assert.ok(!out.trap, `a wasm trap, not an exception: ${out.error}`);
    assert.match(out.error, /chat template: chat_template.*limit/);
    assert.ok(out.ms < 1000, `${out.ms} ms`);
    assert.ok(out.maxRSS > 0 && out.maxRSS < 200 * 2 ** 20, `peak ${out.maxRSS} bytes`);
  });
}

test('the rewritten fixture with a real template still loads', () => {
  const path = join(dir, 'chatml.gguf');
  const chatml =
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}{% endfor %}" +
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}";
  writeFileSync(path, withTemplate(tiny, chatml));
  const child = spawnSync(process.execPath, ['-e', CHILD, pkgPath, path], { encoding: 'utf8', timeout: 120_000 });
  assert.equal(child.status, 0, child.stderr);
  assert.equal(JSON.parse(child.stdout.trim().split('\n').at(-1)).error, null);
});
