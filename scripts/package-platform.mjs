// Platform-specific .vsix packages that carry Dawn, so that `--device auto` finds the GPU after a plain
// install: `npm run package:platform -- linux-x64 [win32-x64 ...]` (after npm run build). Each copies the
// `webgpu` package's native binary for its platform to dist/dawn/<platform>/ (where dawn.ts looks first),
// packages with vsce --target, checks the binary is in the .vsix, and, for this machine's platform, that
// the copy inside the .vsix loads. The generic .vsix (npm run package) stays CPU-only.
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as os from 'node:os';
import * as path from 'node:path';

/** vsce targets and the folder of the `webgpu` package's binary for each (alpine is musl: no Dawn build). */
const DAWN = {
  'linux-x64': 'linux-x64',
  'linux-arm64': 'linux-arm64',
  'win32-x64': 'win32-x64',
  'win32-arm64': 'win32-arm64',
  'darwin-x64': 'darwin-universal',
  'darwin-arm64': 'darwin-universal',
};

const targets = process.argv.slice(2);
if (targets.length === 0 || targets.some((t) => !(t in DAWN))) {
  console.error(`usage: npm run package:platform -- TARGET... (TARGET one of ${Object.keys(DAWN).join(', ')})`);
  process.exit(2);
}
if (!fs.existsSync('dist/kernels.wasm')) {
  console.error('dist/ is not built: run npm run build first');
  process.exit(2);
}
const require = createRequire(import.meta.url);
const webgpu = path.dirname(require.resolve('webgpu/package.json'));
const { version } = JSON.parse(fs.readFileSync('package.json', 'utf8'));
const here = `${process.platform}-${process.platform === 'darwin' ? 'universal' : process.arch}`;

for (const target of targets) {
  const dawn = DAWN[target];
  const inVsix = `extension/dist/dawn/${dawn}/dawn.node`;
  fs.rmSync('dist/dawn', { recursive: true, force: true });
  fs.mkdirSync(`dist/dawn/${dawn}`, { recursive: true });
  try {
    fs.copyFileSync(path.join(webgpu, 'dist', dawn, 'dawn.node'), `dist/dawn/${dawn}/dawn.node`);
    fs.copyFileSync(path.join(webgpu, 'LICENSE.md'), 'dist/dawn/LICENSE.md');
    const ignore = path.join(os.tmpdir(), `lora-lens-vscodeignore-${target}`);
    fs.writeFileSync(ignore, `${fs.readFileSync('.vscodeignore', 'utf8')}\n!dist/dawn/${dawn}/dawn.node\n!dist/dawn/LICENSE.md\n`);
    const out = `lora-lens-${target}-${version}.vsix`;
    execFileSync('npx', ['vsce', 'package', '--no-dependencies', '--no-rewrite-relative-links', '--target', target, '--ignoreFile', ignore, '-o', out], { stdio: 'inherit' });
    fs.rmSync(ignore);

    const files = execFileSync('unzip', ['-Z1', out], { encoding: 'utf8' }).split('\n');
    for (const f of [inVsix, 'extension/dist/kernels.wasm', 'extension/dist/linalg.wasm', 'extension/dist/engine-host.js']) {
      if (!files.includes(f)) throw new Error(`${out} lacks ${f}`);
    }
    if (dawn === here) {
      // The binary as the installed extension will have it, loaded from a folder with no node_modules around it.
      const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-lens-vsix-'));
      try {
        execFileSync('unzip', ['-q', out, inVsix, '-d', tmp]);
        const addon = require(path.join(tmp, inVsix));
        if (typeof addon.create !== 'function') throw new Error(`the Dawn binary in ${out} loads but has no create()`);
        console.log(`${out}: ${(fs.statSync(out).size / 2 ** 20).toFixed(1)} MiB; its Dawn binary loads on this machine`);
      } finally {
        fs.rmSync(tmp, { recursive: true, force: true });
      }
    } else {
      console.log(`${out}: ${(fs.statSync(out).size / 2 ** 20).toFixed(1)} MiB (not loadable here: built for ${dawn})`);
    }
  } finally {
    fs.rmSync('dist/dawn', { recursive: true, force: true });
  }
}
