// Runs the unit tests (Node's test runner over the compiled tests), then the end-to-end tests of the
// extension inside a real VS Code when their harness is present.
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

function run(cmd, args, opts = {}) {
  console.log(`\n$ ${cmd} ${args.join(' ')}`);
  const r = spawnSync(cmd, args, { stdio: 'inherit', ...opts });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

run(process.execPath, ['--test', '--test-reporter=spec', 'out/test/unit/']);
if (existsSync('test/e2e/run.mjs')) run(process.execPath, ['test/e2e/run.mjs']);
