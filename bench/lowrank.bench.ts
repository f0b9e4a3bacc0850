/**
 * The low-rank toolbox at the scale, in os.tmpdir() (removed after):
 * - spectrum of a rank-64 fp32 adapter on all seven projections of a 28-layer Qwen2-7B-shaped model
 *   (hidden 3584, intermediate 18944, 4 KV heads; 196 modules, 646 MB of factors). Goal: under 2 s.
 * - extract-lora --rank 16 of the numerics bench's model (StarCoder2-3B shapes, 7 of 30 layers, bf16)
 *   against its bf16 merge with a rank-8 q/k/v/o adapter, beside a numpy reference doing the same
 *   randomized SVD (the same sketch size, power iterations and re-orthonormalisation, and the same exact
 *   error measurement) on the same files. Goals: ratio ≤ 1.0, peak RSS under 1.5 GB.
 * Each figure with its CPU time (all threads) and the load average: on a shared machine the wall time
 * alone says little. BENCH_PART=spectrum or BENCH_PART=extract runs one part.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { extractLoraJob } from '../src/engine/jobs/extractLora';
import { mergeJob } from '../src/engine/jobs/merge';
import { spectrumJob } from '../src/engine/jobs/spectrum';
import { LinalgPool } from '../src/engine/kernels/linalgPool';
import { cpuKernels } from '../src/engine/kernels/select';
import { writeSyntheticAdapter } from '../src/engine/synthetic/adapter';
import { STARCODER2_3B } from '../src/engine/synthetic/configs';
import { writeSyntheticModel } from '../src/engine/synthetic/model';
import { quietContext } from '../src/engine/util/job';
import { withKernels } from '../src/engine/kernels/kernels';

const QWEN2_7B = {
  architectures: ['Qwen2ForCausalLM'],
  model_type: 'qwen2',
  hidden_size: 3584,
  intermediate_size: 18944,
  num_hidden_layers: 28,
  num_attention_heads: 28,
  num_key_value_heads: 4,
  vocab_size: 152064,
  tie_word_embeddings: false,
};

const load = (): string => os.loadavg()[0].toFixed(1);
const rss = (): string => `${(process.resourceUsage().maxRSS / 1024 / 1024).toFixed(2)} GB`;

async function benchSpectrum(root: string): Promise<void> {
  const t0 = performance.now();
  const a = writeSyntheticAdapter(path.join(root, 'qwen2-7b-r64'), QWEN2_7B, { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], r: 64 });
  const bytes = fs.statSync(path.join(a.dir, 'adapter_model.safetensors')).size;
  console.log(`adapter: ${a.modules.length} modules r=64 fp32, ${(bytes / 1e6).toFixed(0)} MB (written in ${((performance.now() - t0) / 1000).toFixed(1)} s)`);
  await spectrumJob({ adapter: a.dir }, quietContext()); // warm the page cache
  const t1 = performance.now();
  const cpu0 = process.cpuUsage();
  const r = await spectrumJob({ adapter: a.dir }, quietContext());
  const s = (performance.now() - t1) / 1000;
  const cpu = process.cpuUsage(cpu0);
  console.log(`spectrum: ${s.toFixed(2)} s for ${r.modules.length} modules (CPU ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s, all threads; goal < 2 s), peak RSS so far ${rss()}; load average now ${load()}`);
  fs.rmSync(a.dir, { recursive: true });
}

/** numpy's side: the same pairs, the same sketch (l = rank + 8, 2 power iterations, QR after each product), the same exact residual. */
const NUMPY_EXTRACT = String.raw`
import json, os, struct, sys, time
import numpy as np
t0, c0 = time.perf_counter(), time.process_time()
def tensors(d):
    f = os.path.join(d, 'model.safetensors')
    with open(f, 'rb') as h:
        n = struct.unpack('<Q', h.read(8))[0]
        head = json.loads(h.read(n))
    mm = np.memmap(f, dtype=np.uint8, mode='r', offset=8 + n)
    return {k: (v, mm) for k, v in head.items() if k != '__metadata__'}
def f32(t):
    v, mm = t
    a, b = v['data_offsets']
    raw = mm[a:b]
    if v['dtype'] == 'BF16':
        return (raw.view('<u2').astype(np.uint32) << 16).view(np.float32).reshape(v['shape'])
    return raw.view('<f4').reshape(v['shape'])
base, ft = tensors(sys.argv[1]), tensors(sys.argv[2])
rank, p, q = int(sys.argv[3]), 8, 2
rng = np.random.default_rng(1)
worst, done = 0.0, 0
for name, tb in base.items():
    tf = ft[name]
    a, b = tb[0]['data_offsets'], tf[0]['data_offsets']
    if np.array_equal(tb[1][a[0]:a[1]], tf[1][b[0]:b[1]]):
        continue
    tau = (f32(tf) - f32(tb)).astype(np.float64)
    m, n = tau.shape
    l = min(rank + p, m, n)
    Q, _ = np.linalg.qr(tau @ rng.standard_normal((n, l)))
    for _ in range(q):
        Z, _ = np.linalg.qr(tau.T @ Q)
        Q, _ = np.linalg.qr(tau @ Z)
    Qz, Rz = np.linalg.qr(tau.T @ Q)
    U, s, Vt = np.linalg.svd(Rz.T)
    B = ((Q @ U[:, :rank]) * np.sqrt(s[:rank])).astype(np.float32)
    A = ((Qz @ Vt.T[:, :rank]) * np.sqrt(s[:rank])).T.astype(np.float32)
    rel = np.linalg.norm(tau - B.astype(np.float64) @ A.astype(np.float64)) / np.linalg.norm(tau)
    worst, done = max(worst, rel), done + 1
import resource
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({'seconds': time.perf_counter() - t0, 'cpu': time.process_time() - c0, 'rss': rss, 'modules': done, 'maxRelError': worst}))
`;

async function benchExtract(root: string): Promise<void> {
  const config = { ...STARCODER2_3B, num_hidden_layers: 7 };
  const model = writeSyntheticModel(path.join(root, 'base'), config, { dtype: 'BF16' });
  const adapter = writeSyntheticAdapter(path.join(root, 'adapter'), config, { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], r: 8 });
  const ctx = quietContext();
  const k = cpuKernels(ctx);
  const merged = path.join(root, 'merged');
  await mergeJob({ base: model.dir, adapter: adapter.dir, out: merged, dtype: 'bf16', rule: 'peft' }, withKernels(ctx, k));
  await k.dispose();
  console.log(`model: StarCoder2-3B shapes, 7 of 30 layers, ${(model.dataBytes / 1e9).toFixed(2)} GB bf16; finetuned = its bf16 merge with a rank-8 q/k/v/o adapter`);
  const t0 = performance.now();
  const cpu0 = process.cpuUsage();
  const r = await extractLoraJob({ base: model.dir, finetuned: merged, out: path.join(root, 'extracted'), rank: 16 }, ctx);
  const ours = (performance.now() - t0) / 1000;
  const cpu = process.cpuUsage(cpu0);
  const noise = r.modules.map((m) => m.roundingNoise?.fraction ?? 0);
  console.log(
    `extract-lora --rank 16: ${ours.toFixed(2)} s (CPU ${((cpu.user + cpu.system) / 1e6).toFixed(2)} s), ${r.modules.length} modules, largest relError ${r.summary.maxRelError.toExponential(3)}, ` +
      `bf16 rounding noise ${(100 * Math.min(...noise)).toFixed(1)}–${(100 * Math.max(...noise)).toFixed(1)}% of the modules' energy; peak RSS ${rss()} (goal < 1.5 GB); load average now ${load()}`,
  );
  const py = ['/usr/bin/python3', 'python3'].find((p) => spawnSync(p, ['-c', 'import numpy']).status === 0);
  if (!py) {
    console.log('numpy reference: no python3 with numpy here; ratio not measured');
    return;
  }
  const ref = spawnSync(py, ['-c', NUMPY_EXTRACT, model.dir, merged, '16'], { encoding: 'utf8' });
  if (ref.status !== 0) throw new Error(ref.stderr);
  const n = JSON.parse(ref.stdout) as { seconds: number; cpu: number; rss: number; modules: number; maxRelError: number };
  const ourCpu = (cpu.user + cpu.system) / 1e6;
  console.log(
    `numpy reference (same randomized SVD, ${n.modules} modules, largest relError ${n.maxRelError.toExponential(3)}): ${n.seconds.toFixed(2)} s (CPU ${n.cpu.toFixed(2)} s), peak RSS ${(n.rss / 2 ** 30).toFixed(2)} GB; load average now ${load()}`,
  );
  console.log(`ratio ours / numpy: wall ${(ours / n.seconds).toFixed(2)} (goal ≤ 1.0), CPU ${(ourCpu / n.cpu).toFixed(2)}`);
}

async function main(): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-lens-bench-lowrank-'));
  const part = process.env.BENCH_PART;
  const products = new LinalgPool();
  console.log(`${os.cpus().length} cores, load average ${load()}; products in ${products.description}`);
  await products.dispose();
  try {
    if (part !== 'extract') await benchSpectrum(root);
    if (part !== 'spectrum') await benchExtract(root);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
