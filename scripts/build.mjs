// One esbuild config for every target: the CLI and engine host (Node), the extension (Node, `vscode`
// external) and the webview (browser). Entries that do not exist yet are skipped.
import { build } from 'esbuild';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import wabt from 'wabt';

const node = { bundle: true, platform: 'node', target: 'node20', format: 'cjs', sourcemap: true, logLevel: 'warning' };
const targets = [
  { ...node, entryPoints: ['src/engine/cli.ts'], outfile: 'dist/cli.js' },
  { ...node, entryPoints: ['src/engine/host.ts'], outfile: 'dist/engine-host.js' },
  { ...node, entryPoints: ['src/engine/kernels/worker.ts'], outfile: 'dist/kernel-worker.js' },
  { ...node, entryPoints: ['src/extension/extension.ts'], outfile: 'dist/extension.js', external: ['vscode'] },
  {
    bundle: true, platform: 'browser', target: 'es2022', format: 'iife', sourcemap: true, logLevel: 'warning',
    entryPoints: ['webview/main.ts'], outfile: 'dist/webview.js', minify: true,
  },
  { bundle: true, logLevel: 'warning', entryPoints: ['webview/style.css'], outfile: 'dist/webview.css' },
].filter((t) => existsSync(t.entryPoints[0]));

mkdirSync('dist', { recursive: true });
await Promise.all(targets.map((t) => build({ ...t, external: [...(t.external ?? []), 'webgpu'] })));

// The CPU kernels' WebAssembly (src/engine/kernels/wasm/*.wat), assembled here so that no user needs a
// toolchain: dist/kernels.wasm and dist/linalg.wasm ship in the .vsix and the npm package.
const wabtApi = await wabt();
const features = { simd: true, threads: true };
for (const name of ['kernels', 'linalg']) {
  const wat = `src/engine/kernels/wasm/${name}.wat`;
  const module = wabtApi.parseWat(wat, readFileSync(wat, 'utf8'), features);
  module.validate(features);
  writeFileSync(`dist/${name}.wasm`, module.toBinary({}).buffer);
  module.destroy();
}
