// Runs the unit tests (Node's test runner over the compiled tests), then the GPU backend's tests on
// lavapipe (a CPU Vulkan driver: CI has no GPU), then the end-to-end tests of the extension inside a
// real VS Code when their harness is present.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { arch, platform } from 'node:process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

function run(cmd, args, opts = {}) {
  console.log(`\n$ ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...opts });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

// The GPU tests run in their own step below, where a missing driver is an error rather than a skip.
run(process.execPath, ['--test', '--test-reporter=spec', 'out/test/unit/'], { env: { ...process.env, LORA_LENS_GPU_TESTS: 'skip' } });

/**
 * The GPU step (lavapipe from Debian's packages) and the end-to-end step (Debian's chromium, code-server's
 * native builds) need x86_64 Debian-like Linux with apt; elsewhere (a contributor's Mac) they are skipped
 * with a note instead of failing. Why not, or null where they can run.
 */
function whyNotDebianX64() {
  if (platform !== 'linux' || arch !== 'x64') return `this is ${platform}/${arch}, not x86_64 Linux`;
  const apt = spawnSync('sh', ['-c', 'command -v apt-get && command -v dpkg'], { encoding: 'utf8' });
  if (apt.status !== 0) return 'apt-get and dpkg are not on this machine';
  return null;
}
const unsupported = whyNotDebianX64();

/**
 * lavapipe's environment (scripts/setup-lavapipe.sh), for the GPU tests and for an installed platform .vsix's
 * engine: set up once, with one XDG runtime folder, removed when this script exits (process.exit included).
 */
let lavapipeEnv;
function lavapipe() {
  if (lavapipeEnv) return lavapipeEnv;
  console.log('\n$ scripts/setup-lavapipe.sh');
  const setup = spawnSync('bash', ['scripts/setup-lavapipe.sh'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] });
  if (setup.status !== 0) {
    console.error('GPU tests: scripts/setup-lavapipe.sh failed, so the GPU backend cannot be tested (see above)');
    process.exit(1);
  }
  const vars = Object.fromEntries(setup.stdout.trim().split('\n').map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]));
  const runtime = mkdtempSync(join(tmpdir(), 'lora-lens-xdg-'));
  process.on('exit', () => rmSync(runtime, { recursive: true, force: true }));
  lavapipeEnv = { ...vars, MESA_SHADER_CACHE_DIR: join(process.cwd(), '.lavapipe', 'shader-cache'), XDG_RUNTIME_DIR: runtime };
  return lavapipeEnv;
}

if (unsupported) {
  console.log(`\nGPU tests SKIPPED: ${unsupported}; scripts/setup-lavapipe.sh installs its CPU Vulkan driver from Debian's packages. CI runs them.`);
} else {
  const files = readdirSync('out/test/unit').filter((f) => /^gpu.*\.test\.js$/.test(f)).map((f) => join('out/test/unit', f));
  if (files.length > 0) {
    run(process.execPath, ['--test', '--test-reporter=spec', ...files], {
      env: { ...process.env, ...lavapipe(), LORA_LENS_ALLOW_SOFTWARE_GPU: '1', LORA_LENS_GPU_TESTS: 'required' },
    });
  }
}
if (existsSync('test/e2e/run.mjs')) {
  if (unsupported && process.env.LORA_LENS_SKIP_E2E !== '1') console.log(`\nEnd-to-end tests SKIPPED: ${unsupported}; test/e2e/setup.sh installs Debian's chromium with apt-get. CI runs them.`);
  // An installed .vsix (E2E_VSIX) is also checked for the GPU its engine finds: lavapipe's, on a machine without
  // one. Only that engine gets lavapipe's environment (E2E_GPU_ENV), not code-server or the browser.
  else if (process.env.E2E_VSIX && !unsupported) run(process.execPath, ['test/e2e/run.mjs'], { env: { ...process.env, E2E_GPU_ENV: JSON.stringify(lavapipe()) } });
  else run(process.execPath, ['test/e2e/run.mjs']);
}
