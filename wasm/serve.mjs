#!/usr/bin/env node
// A tiny static server for the annotation tool: serves wasm/ (the tool at
// /www/, the built packages at /pkg/ and /pkg-threads/) and, with --fixtures
// DIR, that folder at /fixtures/. Used by scripts/annotate, the end-to-end
// test and the browser benchmark.
//
// Every response carries the COOP/COEP headers that make the page
// cross-origin isolated, which shared WebAssembly memory (the tool's threads)
// needs; --no-isolation leaves them out (the page then scores on one thread).
// Usage: node wasm/serve.mjs [--port 8080] [--host 127.0.0.1] [--fixtures DIR] [--no-isolation]
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

/** The headers of cross-origin isolation (same-origin resources only). */
const ISOLATION = {
  'cross-origin-opener-policy': 'same-origin',
  'cross-origin-embedder-policy': 'require-corp',
  'cross-origin-resource-policy': 'same-origin',
};

/**
 * Starts the server; resolves to { server, url } once it listens.
 * `port` 0 picks a free port. `isolate`: send the COOP/COEP headers.
 * `mounts`: more folders to serve, as { '/prefix/': dir }.
 */
export function serve({ port = 8080, host = '127.0.0.1', fixtures = null, isolate = true, mounts = {} } = {}) {
  const wasmDir = resolve(fileURLToPath(new URL('.', import.meta.url)));
  const fixturesDir = fixtures ? resolve(fixtures) : null;
  const extra = Object.entries(mounts).map(([prefix, dir]) => [prefix, resolve(dir)]);
  const headers = isolate ? ISOLATION : {};
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    if (url.pathname === '/') {
      res.writeHead(302, { location: '/www/', ...headers });
      res.end();
      return;
    }
    let file = null;
    if (fixturesDir && url.pathname.startsWith('/fixtures/')) file = inside(fixturesDir, url.pathname.slice('/fixtures'.length));
    else if (['/www/', '/pkg/', '/pkg-threads/'].some((p) => url.pathname.startsWith(p))) file = inside(wasmDir, url.pathname);
    else {
      const m = extra.find(([prefix]) => url.pathname.startsWith(prefix));
      if (m) file = inside(m[1], url.pathname.slice(m[0].length - 1));
    }
    if (file && url.pathname.endsWith('/')) file = join(file, 'index.html');
    let size = -1;
    try {
      const st = file && statSync(file);
      if (st && st.isFile()) size = st.size;
    } catch {
      size = -1;
    }
    if (size < 0) {
      res.writeHead(404, { 'content-type': 'text/plain', ...headers });
      res.end(`not found: ${url.pathname}\n`);
      return;
    }
    res.writeHead(200, {
      'content-type': TYPES[extname(file)] ?? 'application/octet-stream',
      'content-length': size,
      'cache-control': 'no-cache',
      ...headers,
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
  const isolate = !args.includes('--no-isolation');
  const { url } = await serve({ port: Number(opt('--port', 8080)), host: opt('--host', '127.0.0.1'), fixtures: opt('--fixtures', null), isolate });
  console.log(`MAIN annotation tool: ${url}/www/  (Ctrl+C stops)${isolate ? '' : ' -- not cross-origin isolated: one thread'}`);
}
