// Runs every benchmark in out/bench/ (compiled from bench/*.bench.ts), each in its own process so that
// its peak RSS is its own. `npm run bench -- merge` runs only the benchmarks whose name contains "merge".
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';

const build = spawnSync('npm', ['run', 'build:tests'], { stdio: 'inherit' });
if (build.status !== 0) process.exit(build.status ?? 1);
const filter = process.argv[2] ?? '';
const benches = readdirSync('out/bench').filter((f) => f.endsWith('.bench.js') && f.includes(filter)).sort();
for (const b of benches) {
  console.log(`\n== ${b.replace('.bench.js', '')}`);
  const r = spawnSync(process.execPath, ['--expose-gc', `out/bench/${b}`], { stdio: 'inherit' });
  if (r.status !== 0) process.exit(r.status ?? 1);
}
