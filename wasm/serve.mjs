#!/usr/bin/env node
// A tiny static server for the annotation tool: serves wasm/ (the tool at
// /www/, the built package at /pkg/) and, with --fixtures DIR, that folder at
// /fixtures/. Used by scripts/annotate and by the end-to-end test.
// Usage: node wasm/serve.mjs [--port 8080] [--host 127.0.0.1] [--fixtures DIR]
import { createReadStream, statSync } from 'node:fs';
import { createServer } from 'node:http';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { fileURLToPath } from 'node:url';

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.jsonl': 'application/x-ndjson; charset=utf-8',
  '.wasm': 'application/wasm',
  '.ts': 'text/plain; charset=utf-8',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

/** Resolves a URL path inside `base`, or null when it would leave it. */
function inside(base, urlPath) {
  const p = normalize(join(base, decodeURIComponent(urlPath)));
  return p === base || p.startsWith(base + sep) ? p : null;
}

/**
 * Starts the server; resolves to { server, url } once it listens.
 * `port` 0 picks a free port.
 */
export function serve({ port = 8080, host = '127.0.0.1', fixtures = null } = {}) {
  const wasmDir = resolve(fileURLToPath(new URL('.', import.meta.url)));
  const fixturesDir = fixtures ? resolve(fixtures) : null;
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    if (url.pathname === '/') {
      res.writeHead(302, { location: '/www/' });
      res.end();
      return;
    }
    let file = null;
    if (fixturesDir && url.pathname.startsWith('/fixtures/')) file = inside(fixturesDir, url.pathname.slice('/fixtures'.length));
    else if (url.pathname.startsWith('/www/') || url.pathname.startsWith('/pkg/')) file = inside(wasmDir, url.pathname);
    if (file && url.pathname.endsWith('/')) file = join(file, 'index.html');
    let size = -1;
    try {
      const st = file && statSync(file);
      if (st && st.isFile()) size = st.size;
    } catch {
      size = -1;
    }
    if (size < 0) {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end(`not found: ${url.pathname}\n`);
      return;
    }
    res.writeHead(200, {
      'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
      'content-length': size,
      'cache-control': 'no-cache',
    });
    if (req.method === 'HEAD') res.end();
    else createReadStream(file).pipe(res);
  });
  return new Promise((ok, fail) => {
    server.once('error', fail);
    server.listen(port, host, () => {
      const a = server.address();
      ok({ server, url: `http://${host}:${a.port}` });
    });
  });
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2);
  const opt = (name, dflt) => {
    const i = args.indexOf(name);
    return i >= 0 ? args[i + 1] : dflt;
  };
  const { url } = await serve({ port: Number(opt('--port', 8080)), host: opt('--host', '127.0.0.1'), fixtures: opt('--fixtures', null) });
  console.log(`MAIN annotation tool: ${url}/www/  (Ctrl+C stops)`);
}
