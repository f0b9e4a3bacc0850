/**
 * Census of a 12 GB checkpoint: StarCoder2-3B's true layout at fp32 (483 tensors, 3,030,371,328
 * elements, 12.1 GB), written header-true with a sparse data region in os.tmpdir() (removed after).
 * A census reads headers only, so it must not depend on the data size. Goal: under 50 ms.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { censusJob } from '../src/engine/jobs/census';
import { writeSyntheticAdapter } from '../src/engine/synthetic/adapter';
import { STARCODER2_3B } from '../src/engine/synthetic/configs';
import { writeSyntheticModel } from '../src/engine/synthetic/model';
import { quietContext } from '../src/engine/util/job';

const RUNS = 20;
const GOAL_MS = 50;

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-lens-bench-census-'));
try {
  const t0 = performance.now();
  const model = writeSyntheticModel(path.join(root, 'sc2-3b'), STARCODER2_3B, { dtype: 'F32', sparse: true });
  const adapter = writeSyntheticAdapter(path.join(root, 'adapter'), { ...STARCODER2_3B, vocab_size: 2 }, { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], r: 8 });
  const fileBytes = fs.statSync(model.files[0]).size;
  console.log(`wrote ${(fileBytes / 1e9).toFixed(2)} GB header-true sparse file in ${(performance.now() - t0).toFixed(0)} ms`);

  const times: number[] = [];
  let summary;
  for (let i = 0; i < RUNS; i++) {
    const s = performance.now();
    summary = censusJob({ path: model.dir, adapter: adapter.dir }, quietContext()).summary;
    times.push(performance.now() - s);
  }
  const first = times[0];
  times.sort((a, b) => a - b);
  const median = times[Math.floor(RUNS / 2)];
  console.log(`census: ${summary!.tensors} tensors, ${summary!.params.toLocaleString('en')} elements, ${summary!.loraTargetTensors} LoRA targets, ${summary!.nonTargetTensors} others`);
  console.log(`census time (with --adapter): first run ${first.toFixed(1)} ms, best ${times[0].toFixed(1)} ms, median ${median.toFixed(1)} ms, worst ${times[RUNS - 1].toFixed(1)} ms over ${RUNS} runs (goal < ${GOAL_MS} ms): ${median < GOAL_MS ? 'met' : 'MISSED'}`);

  // The whole command as a user runs it, Node's start-up included (dist/ is built by `npm run bench`).
  const cli = path.resolve(__dirname, '../../dist/cli.js');
  if (fs.existsSync(cli)) {
    const wall: number[] = [];
    for (let i = 0; i < 5; i++) {
      const s = performance.now();
      const r = spawnSync(process.execPath, [cli, 'census', model.dir, '--adapter', adapter.dir, '--json', path.join(root, 'census.json')], { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(r.stderr);
      wall.push(performance.now() - s);
    }
    wall.sort((a, b) => a - b);
    console.log(`lora-lens census as a process (node start-up included): median ${wall[2].toFixed(0)} ms over 5 runs`);
  }
} finally {
  fs.rmSync(root, { recursive: true, force: true });
}
