// Node tests of the WASM package (wasm/pkg-node, built by scripts/build-wasm):
// the scores of real Alpaca pairs equal the native engine's, errors are JS
// exceptions with the engine's message (never a wasm trap), and the
// reverse model's guess works.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { before, describe, test } from 'node:test';

import { FIELDS, fieldTolerance, modelPath, nativeScores, requireFile, root, samplePairs } from './common.mjs';

const require = createRequire(import.meta.url);
const pkgPath = requireFile(join(root, 'wasm', 'pkg-node', 'main_wasm.js'), 'run scripts/build-wasm');
const { Model, ModelLoader, Scorer, parseRecord } = require(pkgPath);

const TOL = 1e-4;
// One token's log-prob is more sensitive to f32 summation order (simd128's
// 4-row tiles against AVX-512's 16-row ones) than a view's mean: an
// improbable token has been seen 2.2e-4 apart while every §3 field stayed
// within TOL, the bound the issue sets on scores.
const TOKEN_TOL = 1e-3;
const N_PAIRS = 20;

/** Fails on a wasm trap (WebAssembly.RuntimeError) as well as on no error at all. */
function assertJsError(f, pattern) {
  assert.throws(f, (e) => {
    assert.ok(!(e instanceof WebAssembly.RuntimeError), `a wasm trap, not an exception: ${e}`);
    assert.match(String(e.message), pattern);
    return true;
  });
}

let bytes;
let model;

before(() => {
  bytes = new Uint8Array(readFileSync(requireFile(modelPath, 'run scripts/fetch-fixtures')));
  model = Model.fromBytes(bytes);
});

describe('scores equal the native engine', () => {
  const lines = samplePairs(N_PAIRS);
  let native;
  let scorer;
  before(() => {
    native = nativeScores(lines, 'node-pairs').scores;
    scorer = new Scorer(model, null, {});
  });

  test(`${N_PAIRS} Alpaca pairs, every §3 field within ${TOL} (a total within ${TOL} per token), every token within ${TOKEN_TOL}`, () => {
    const pairs = lines.map((l, i) => parseRecord(l, i + 1));
    // Half one by one, half in one fused batch: both paths must agree with native.
    const half = N_PAIRS / 2;
    const got = [
      ...pairs.slice(0, half).map((p) => scorer.scorePair(p.instruction, p.response, { tokens: true })),
      ...scorer.scoreBatch(pairs.slice(half), { tokens: true }),
    ];
    assert.equal(got.length, N_PAIRS);
    let worst = 0;
    let worstToken = 0;
    for (let i = 0; i < N_PAIRS; i++) {
      const [n, w] = [native[i], got[i]];
      for (const [snake, camel] of FIELDS) {
        assert.equal(typeof w[camel], 'number', `pair ${i}: ${camel} missing`);
        const d = Math.abs(n[snake] - w[camel]);
        worst = Math.max(worst, d);
        assert.ok(d <= fieldTolerance(snake, n, TOL), `pair ${i}: ${camel} wasm ${w[camel]} vs native ${n[snake]} (diff ${d})`);
      }
      assert.equal(w.responseTokens, n.response_tokens, `pair ${i}: response tokens`);
      assert.equal(w.instructionTokens, n.instruction_tokens, `pair ${i}: instruction tokens`);
      assert.equal(w.truncated, n.truncated);
      for (const [snake, camel] of [['response_detail', 'responseDetail'], ['instruction_detail', 'instructionDetail']]) {
        assert.equal(w[camel].length, n[snake].length, `pair ${i}: ${camel} length`);
        w[camel].forEach((t, j) => {
          const m = n[snake][j];
          assert.equal(t.id, m.id);
          assert.equal(t.text, m.text);
          for (const k of ['cond', 'uncond', 'pmi']) {
            const d = Math.abs(t[k] - m[k]);
            worstToken = Math.max(worstToken, d);
            assert.ok(d <= TOKEN_TOL, `pair ${i} ${camel}[${j}].${k}: ${t[k]} vs ${m[k]}`);
          }
        });
      }
    }
    console.log(`# largest difference from native over ${N_PAIRS} pairs: ${worst.toExponential(2)} (scores), ${worstToken.toExponential(2)} (single tokens)`);
  });

  test('without { tokens: true } there is no per-token detail', () => {
    const p = parseRecord(lines[0], 1);
    const s = scorer.scorePair(p.instruction, p.response);
    assert.equal(s.responseDetail, undefined);
    assert.equal(s.instructionDetail, undefined);
    assert.ok(Math.abs(s.alignment - native[0].alignment) <= TOL);
  });
});

describe('loading', () => {
  test('ModelLoader from chunks equals fromBytes', () => {
    const loader = new ModelLoader(bytes.length);
    const chunk = 7 << 20; // not a divisor of the size: the last chunk is short
    for (let at = 0; at < bytes.length; at += chunk) loader.write(bytes.subarray(at, at + chunk));
    assert.equal(loader.written, bytes.length);
    const m = loader.finish();
    assert.equal(m.fileBytes, bytes.length);
    assert.equal(m.description, model.description);
    assert.match(m.description, /30 layers, d_model 576/);
    const a = new Scorer(m, null).scorePair('Say hi.', 'Hi!');
    const b = new Scorer(model, null).scorePair('Say hi.', 'Hi!');
    assert.equal(a.alignment, b.alignment);
  });

  test('bad model bytes are an exception naming the problem', () => {
    assertJsError(() => Model.fromBytes(new Uint8Array([1, 2, 3, 4, 5, 6, 7, 8])), /GGUF|magic|malformed/i);
    assertJsError(() => Model.fromBytes(bytes.subarray(0, 1 << 20)), /malformed|outside|truncated|tensor/i);
    assertJsError(() => Model.fromBytes(new Uint8Array(0)), /model size 0/);
  });

  test('a loader rejects overruns and short files', () => {
    const l = new ModelLoader(4);
    assertJsError(() => l.write(new Uint8Array(5)), /overruns the announced size 4/);
    l.write(new Uint8Array(2));
    assertJsError(() => l.finish(), /only 2 of 4 bytes/);
    assertJsError(() => new ModelLoader(-1), /not a whole number/);
    assertJsError(() => new ModelLoader(1.5), /not a whole number/);
  });
});

describe('options and inputs', () => {
  test('bad options are exceptions naming the option', () => {
    assertJsError(() => new Scorer(model, null, { maxTokens: 4 }), /max_tokens.*too small|maxTokens/);
    assertJsError(() => new Scorer(model, null, { combine: 'max' }), /combine.*'max'/);
    assertJsError(() => new Scorer(model, null, { precision: 'int4' }), /precision.*'int4'/);
    assertJsError(() => new Scorer(model, null, { maxTokenz: 10 }), /unknown field 'maxTokenz'/);
    assertJsError(() => new Scorer(model, null, { batchTokens: 0 }), /batchTokens/);
    assertJsError(() => new Scorer(model, null, { batchTokens: 1e6 }), /batchTokens.*8192/);
    assertJsError(() => new Scorer(model, null, { maxTokens: 1e6 }), /maxTokens.*8192/);
    const s = new Scorer(model, null, {});
    assertJsError(() => s.scorePair('a', 'b', { tokenz: true }), /unknown field 'tokenz'/);
    assertJsError(() => s.scoreBatch([{ instruction: 'a' }]), /pairs.*response/);
    assertJsError(() => s.scoreBatch('nope'), /pairs/);
    assertJsError(() => s.generate('text', { maxNewTokens: 0 }), /maxNewTokens/);
    assertJsError(() => s.generate('text', { temperature: -1 }), /temperature/);
    assertJsError(() => s.generate('text', { topP: 2 }), /top_p/);
    assertJsError(() => new Scorer(model, null, { maxTokens: 64 }).generate('word '.repeat(100)), /response: \d+ tokens is longer than maxTokens 64/);
  });

  test('edge-case texts score or raise, never trap', () => {
    const s = new Scorer(model, null, { maxTokens: 16 });
    for (const [x, y] of [['', ''], ['', 'y'], ['x', ''], ['\u0000', '\uFFFF'], ['a'.repeat(5000), 'b'.repeat(5000)], ['<|im_end|>', '<|im_start|>']]) {
      try {
        const r = s.scorePair(x, y);
        assert.ok(Number.isFinite(r.alignment) || Number.isNaN(r.alignment));
      } catch (e) {
        assert.ok(!(e instanceof WebAssembly.RuntimeError), `trap on (${JSON.stringify(x).slice(0, 20)}, ${JSON.stringify(y).slice(0, 20)}): ${e}`);
      }
    }
    assertJsError(() => s.scorePair('x', 'y'), /max_tokens.*16 cannot hold the chat template/);
    const long = new Scorer(model, null, { maxTokens: 64 }).scorePair('Summarise.', 'word '.repeat(200));
    assert.equal(long.truncated, true);
  });

  test('the contrastive score with negatives in a batch', () => {
    const s = new Scorer(model, null, { negatives: 1 });
    assertJsError(() => s.scoreBatch([{ instruction: 'a', response: 'b' }]), /negatives/);
    const r = s.scoreBatch([
      { instruction: 'What is the capital of France?', response: 'Paris is the capital of France.' },
      { instruction: 'Add 17 and 25.', response: '17 + 25 = 42.' },
    ]);
    assert.equal(typeof r[0].contrastive, 'number');
  });

  test('parseRecord reads the three formats and names the line of a bad one', () => {
    assert.deepEqual(parseRecord('{"instruction":"Add","input":"1 and 2","output":"3"}', 1), { instruction: 'Add\n\n1 and 2', response: '3' });
    assert.deepEqual(parseRecord('{"prompt":"p","response":"r"}', 1), { instruction: 'p', response: 'r' });
    assert.deepEqual(
      parseRecord('{"messages":[{"role":"system","content":"s"},{"role":"user","content":"u"},{"role":"assistant","content":"a"}]}', 1),
      { instruction: 'u', response: 'a' },
    );
    assertJsError(() => parseRecord('{"foo":1}', 7), /line 7: no known format/);
    assertJsError(() => parseRecord('not json', 3), /line 3: invalid JSON/);
  });
});

describe('generate', () => {
  test("the reverse model's guess: greedy is reproducible, a separate reverse model is used", () => {
    const s = new Scorer(model, model.share(), {});
    const response = 'The capital of France is Paris.';
    const a = s.generate(response, { maxNewTokens: 24 });
    const b = s.generate(response, { maxNewTokens: 24 });
    assert.ok(a.length > 0, 'an instruction was guessed');
    assert.equal(a, b);
    const c = s.generate(response, { maxNewTokens: 24, temperature: 0.8, topP: 0.9, seed: 7 });
    assert.equal(typeof c, 'string');
    console.log(`# guessed instruction for "${response}": ${JSON.stringify(a)}`);
  });
});
