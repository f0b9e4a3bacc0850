/**
 * PyTorch pickle checkpoints against safetensors, written by the bench without torch (bench/torchZip.ts,
 * torch.save's zip layout) from the same synthetic StarCoder2-3B-shaped tensors:
 * - census of a ~5 GB pytorch_model.bin (24 of 30 layers, bf16, 387 tensors, zip64) whose data is a
 *   hole: it reads the zip directory, the local headers and the pickle, never tensor data. Goal: well
 *   under a second. The same census of the same layout in safetensors beside it.
 * - merge bf16 of a q/k/v/o r=8 adapter into a base with real values (BENCH_PICKLE_LAYERS, default 2
 *   layers: about 0.7 GB), once from pytorch_model.bin and once from model.safetensors, alternating,
 *   best of BENCH_PICKLE_RUNS (default 3) each. Goal: the .bin merge within 1.5x of the safetensors one.
 * Files live in os.tmpdir() and are removed after.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { closeCheckpoint, openCheckpoint } from '../src/engine/checkpoint/checkpoint';
import { censusJob } from '../src/engine/jobs/census';
import { mergeJob } from '../src/engine/jobs/merge';
import { cpuKernels } from '../src/engine/kernels/select';
import { writeSyntheticAdapter } from '../src/engine/synthetic/adapter';
import { STARCODER2_3B } from '../src/engine/synthetic/configs';
import { writeSyntheticModel } from '../src/engine/synthetic/model';
import { quietContext } from '../src/engine/util/job';
import { writeTorchZip, ZipTensor } from './torchZip';
import { withKernels } from '../src/engine/kernels/kernels';

const CENSUS_RUNS = 10;
const MERGE_LAYERS = Number(process.env.BENCH_PICKLE_LAYERS ?? 2);
const MERGE_RUNS = Number(process.env.BENCH_PICKLE_RUNS ?? 3);

/** The same tensors as a safetensors model folder, as pytorch_model.bin in another (data copied unless `sparse`). */
function asPickleFolder(stDir: string, binDir: string, sparse: boolean): void {
  const c = openCheckpoint(stDir);
  try {
    fs.mkdirSync(binDir, { recursive: true });
    fs.copyFileSync(path.join(stDir, 'config.json'), path.join(binDir, 'config.json'));
    const chunk = Buffer.allocUnsafe(64 << 20);
    const tensors: ZipTensor[] = c.tensors.map((t) => ({
      name: t.name,
      dtype: t.dtype,
      shape: t.shape,
      byteLength: t.byteLength,
      write: sparse
        ? undefined
        : (fd, at) => {
            const src = c.handles.fd(t.file);
            for (let done = 0; done < t.byteLength; ) {
              const n = fs.readSync(src, chunk, 0, Math.min(chunk.length, t.byteLength - done), t.offset + done);
              fs.writeSync(fd, chunk, 0, n, at + done);
              done += n;
            }
          },
    }));
    writeTorchZip(path.join(binDir, 'pytorch_model.bin'), tensors);
  } finally {
    closeCheckpoint(c);
  }
}

function censusTimes(dir: string): { median: number; first: number; best: number; tensors: number } {
  const times: number[] = [];
  let tensors = 0;
  for (let i = 0; i < CENSUS_RUNS; i++) {
    const s = performance.now();
    tensors = censusJob({ path: dir }, quietContext()).summary.tensors;
    times.push(performance.now() - s);
  }
  const first = times[0];
  times.sort((a, b) => a - b);
  return { median: times[Math.floor(times.length / 2)], first, best: times[0], tensors };
}

async function main(): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-lens-bench-pickle-'));
  try {
    // 1. Census of a ~5 GB pytorch_model.bin.
    const big = { ...STARCODER2_3B, num_hidden_layers: 24 };
    const st = writeSyntheticModel(path.join(root, 'big-st'), big, { dtype: 'BF16', sparse: true });
    asPickleFolder(st.dir, path.join(root, 'big-bin'), true);
    const binFile = path.join(root, 'big-bin', 'pytorch_model.bin');
    console.log(`pytorch_model.bin: ${(fs.statSync(binFile).size / 1e9).toFixed(2)} GB (sparse, zip64), ${st.tensors.length} tensors, bf16`);
    const cb = censusTimes(path.join(root, 'big-bin'));
    const cs = censusTimes(st.dir);
    console.log(`census pytorch_model.bin: first ${cb.first.toFixed(1)} ms, best ${cb.best.toFixed(1)} ms, median ${cb.median.toFixed(1)} ms over ${CENSUS_RUNS} runs (goal well under 1000 ms: ${cb.median < 1000 ? 'met' : 'MISSED'})`);
    console.log(`census model.safetensors (same layout): first ${cs.first.toFixed(1)} ms, median ${cs.median.toFixed(1)} ms`);
    const cli = path.resolve(__dirname, '../../dist/cli.js');
    if (fs.existsSync(cli)) {
      const wall: number[] = [];
      for (let i = 0; i < 5; i++) {
        const s = performance.now();
        const r = spawnSync(process.execPath, [cli, 'census', path.join(root, 'big-bin'), '--json', path.join(root, 'census.json')], { encoding: 'utf8' });
        if (r.status !== 0) throw new Error(r.stderr);
        wall.push(performance.now() - s);
      }
      wall.sort((a, b) => a - b);
      console.log(`lora-lens census of the .bin as a process (node start-up included): median ${wall[2].toFixed(0)} ms over 5 runs`);
    }
    fs.rmSync(path.join(root, 'big-st'), { recursive: true });
    fs.rmSync(path.join(root, 'big-bin'), { recursive: true });

    // 2. The same merge from pytorch_model.bin and from model.safetensors.
    const cfg = { ...STARCODER2_3B, num_hidden_layers: MERGE_LAYERS };
    const base = writeSyntheticModel(path.join(root, 'base-st'), cfg, { dtype: 'BF16' });
    asPickleFolder(base.dir, path.join(root, 'base-bin'), false);
    const adapter = writeSyntheticAdapter(path.join(root, 'adapter'), cfg, { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], r: 8 });
    const ctx = quietContext();
    const k = cpuKernels(ctx);
    console.log(`merge bf16: StarCoder2-3B shapes, ${MERGE_LAYERS} layers, ${(base.dataBytes / 1e9).toFixed(2)} GB bf16, adapter ${adapter.modules.length} modules r=8; ${k.description}; ${os.cpus().length} cores`);
    const best = { bin: Infinity, st: Infinity };
    for (let i = 0; i < MERGE_RUNS; i++) {
      for (const which of ['st', 'bin'] as const) {
        const out = path.join(root, `merged-${which}`);
        const s = performance.now();
        await mergeJob({ base: path.join(root, `base-${which}`), adapter: adapter.dir, out, dtype: 'bf16', rule: 'peft' }, withKernels(ctx, k));
        const t = (performance.now() - s) / 1000;
        best[which] = Math.min(best[which], t);
        console.log(`  run ${i + 1} from ${which === 'bin' ? 'pytorch_model.bin' : 'model.safetensors'}: ${t.toFixed(2)} s`);
      }
    }
    const same = fs.readFileSync(path.join(root, 'merged-bin', 'model.safetensors')).equals(fs.readFileSync(path.join(root, 'merged-st', 'model.safetensors')));
    const ratio = best.bin / best.st;
    console.log(`merge from .bin: best ${best.bin.toFixed(2)} s; from .safetensors: best ${best.st.toFixed(2)} s; ratio ${ratio.toFixed(2)}x (goal within 1.5x: ${ratio <= 1.5 ? 'met' : 'MISSED'}); outputs identical: ${same}`);
    await k.dispose();
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

void main().catch((e) => {
  console.error(e);
  process.exit(1);
});
