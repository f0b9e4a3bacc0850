// The end-to-end tests of the extension in a real VS Code: installs what they need (setup.sh, cached),
// then runs e2e.test.mjs. Called by scripts/run-tests.mjs after the unit tests, with dist/ built.
// LORA_LENS_SKIP_E2E=1 skips them (for quick local iterations; CI runs them).
import { spawnSync } from 'node:child_process';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
if (process.env.LORA_LENS_SKIP_E2E === '1') {
  console.log('end-to-end tests skipped (LORA_LENS_SKIP_E2E=1)');
  process.exit(0);
}

function run(cmd, args) {
  console.log(`\n$ ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { cwd: here, stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

run('sh', ['setup.sh']);
// One VS Code for the whole file: the tests build on each other's state and run in order. Node applies
// --test-timeout to the file as a whole too, so it bounds the whole suite, not one test.
run(process.execPath, ['--test', '--test-reporter=spec', '--test-timeout=1200000', 'e2e.test.mjs']);
