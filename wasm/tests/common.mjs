// Helpers shared by the Node tests and the benchmark: fixture paths, the
// sample of real Alpaca pairs, and the native CLI's scores of those pairs.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const root = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const fixtures = process.env.MAIN_FIXTURES ? resolve(process.env.MAIN_FIXTURES) : join(root, 'fixtures');
export const modelPath = join(fixtures, 'SmolLM2-135M-Instruct.Q4_1.gguf');
export const alpacaPath = join(fixtures, 'alpaca_en_demo.jsonl');
/** Where tests write what they produce (gitignored). */
export const outDir = join(root, 'target', 'wasm-tests');

export function requireFile(path, how) {
  if (!existsSync(path)) throw new Error(`${path} is missing: ${how}`);
  return path;
}

/**
 * The first `n` Alpaca records (raw JSONL lines) whose texts together are at
 * most `maxChars` long: real pairs, short enough to keep the tests quick.
 */
export function samplePairs(n, maxChars = 400) {
  const lines = readFileSync(requireFile(alpacaPath, 'run scripts/fetch-fixtures'), 'utf8').split('\n');
  const out = [];
  for (const line of lines) {
    if (!line.trim()) continue;
    const r = JSON.parse(line);
    if (r.instruction.length + r.input.length + r.output.length <= maxChars) out.push(line);
    if (out.length === n) break;
  }
  if (out.length < n) throw new Error(`only ${out.length} pairs of at most ${maxChars} chars in ${alpacaPath}`);
  return out;
}

export function mainScoreBin() {
  const target = process.env.CARGO_TARGET_DIR ? resolve(process.env.CARGO_TARGET_DIR) : join(root, 'target');
  const bin = process.env.MAIN_SCORE_BIN ?? join(target, 'release', 'main-score');
  return requireFile(bin, 'build it with `cargo build --release -p main-engine --bin main-score` (or set MAIN_SCORE_BIN)');
}

/**
 * Scores JSONL lines with the native CLI (`main-score score --tokens
 * --precision exact`, the browser's default precision; its defaults
 * otherwise: max_tokens 1024, combine min) and returns the "alignment"
 * object of each record, in order.
 */
export function nativeScores(lines, name, extraArgs = []) {
  mkdirSync(outDir, { recursive: true });
  const input = join(outDir, `${name}.jsonl`);
  const output = join(outDir, `${name}.native.jsonl`);
  writeFileSync(input, lines.join('\n') + '\n');
  const t0 = process.hrtime.bigint();
  const stdout = execFileSync(mainScoreBin(), ['score', '--model', modelPath, '--input', input, '--output', '-', '--tokens', '--precision', 'exact', ...extraArgs], {
    stdio: ['ignore', 'pipe', 'inherit'],
    maxBuffer: 1 << 28,
    encoding: 'utf8',
  });
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  writeFileSync(output, stdout);
  const scores = stdout.trim().split('\n').map((l) => JSON.parse(l).alignment);
  if (scores.length !== lines.length) throw new Error(`main-score wrote ${scores.length} records for ${lines.length} pairs`);
  return { scores, seconds };
}

/** The §3 fields, snake_case (CLI) -> camelCase (JS). */
export const FIELDS = [
  ['alignment', 'alignment'], ['fwd_pmi', 'fwdPmi'], ['rev_pmi', 'revPmi'],
  ['fwd_cond', 'fwdCond'], ['fwd_uncond', 'fwdUncond'], ['rev_cond', 'revCond'],
  ['rev_uncond', 'revUncond'], ['ifd', 'ifd'], ['rifd', 'rifd'],
  ['semantic', 'semantic'], ['structural', 'structural'], ['intentional', 'intentional'],
  ['fwd_pmi_total', 'fwdPmiTotal'], ['rev_pmi_total', 'revPmiTotal'],
];

/**
 * The bound on a field's difference from native. A per-token mean has `tol`;
 * a total is that mean times its token count, so it has `tol` times the count
 * (fwd_pmi_total sums the response's tokens, rev_pmi_total the instruction's).
 */
export function fieldTolerance(snake, native, tol) {
  if (snake === 'fwd_pmi_total') return tol * Math.max(1, native.response_tokens);
  if (snake === 'rev_pmi_total') return tol * Math.max(1, native.instruction_tokens);
  return tol;
}
