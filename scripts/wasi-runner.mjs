#!/usr/bin/env -S node --no-warnings
// Cargo runner for wasm32-wasip1 test binaries: runs them in Node's WASI, so
// the simd128 kernels are tested by the same #[test]s as on native.
// Usage (set by .cargo/config.toml): node scripts/wasi-runner.mjs TEST.wasm [ARGS...]
import { readFile } from "node:fs/promises";
import { WASI } from "node:wasi";
import { argv, env, exit } from "node:process";

const [wasmPath, ...args] = argv.slice(2);
const wasi = new WASI({ version: "preview1", args: [wasmPath, ...args], env, preopens: { "/": "/" }, returnOnExit: true });
const module = await WebAssembly.compile(await readFile(wasmPath));
const instance = await WebAssembly.instantiate(module, wasi.getImportObject());
exit(wasi.start(instance));
