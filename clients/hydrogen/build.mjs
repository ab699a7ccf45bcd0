// Builds Hydrogen's page into www/hydrogen/ (or the directory given as the first argument):
// main.js bundled with esbuild, index.html, and the SDK's assets (theme, fonts, icons, the
// download sandbox, its olm worker) and olm's files copied from node_modules. Run by
// `cargo xtask` after `npm ci` here; the output is not committed.

import { build } from 'esbuild';
import { cp, mkdir, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(process.argv[2] ?? join(here, '../../www/hydrogen'));
const sdk = join(here, 'node_modules/hydrogen-view-sdk');
const olm = join(here, 'node_modules/@matrix-org/olm');

// The SDK's bundle imports olm.js for its side effects only, but loads olm itself at runtime
// from assetPaths.olm (a <script> for olm.js, then olm.wasm); bundling the emscripten file
// would add an unused copy that requires node's fs and path.
const olmImportIsLoadedAtRuntime = {
  name: 'olm-loaded-at-runtime',
  setup(b) {
    b.onResolve({ filter: /^@matrix-org\/olm\/olm\.js$/ }, () => ({ path: 'olm', namespace: 'empty' }));
    b.onLoad({ filter: /.*/, namespace: 'empty' }, () => ({ contents: '' }));
  },
};

await rm(out, { recursive: true, force: true });
await mkdir(out, { recursive: true });
await build({
  entryPoints: [join(here, 'main.js')],
  bundle: true,
  format: 'esm',
  platform: 'browser',
  target: 'es2020',
  minify: true,
  outfile: join(out, 'main.js'),
  plugins: [olmImportIsLoadedAtRuntime],
  logLevel: 'warning',
});
await cp(join(here, 'index.html'), join(out, 'index.html'));
await cp(join(sdk, 'asset-build/assets'), join(out, 'assets'), { recursive: true });
await mkdir(join(out, 'olm'));
for (const f of ['olm.js', 'olm.wasm', 'olm_legacy.js']) await cp(join(olm, f), join(out, 'olm', f));
console.log(`hydrogen: built ${out}`);
