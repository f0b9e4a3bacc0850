/**
 * UNMERGE at the source's scale: the mask of 8 rank-32 adapters over 28 layers x q/k/v/o of a
 * Qwen2.5-7B-shaped model (hidden 3584, 28 heads, 4 KV heads: q/o 3584x3584, k/v 512x3584; 822,083,584
 * masked elements, budget 100,000 -> k = 892), then a decomposition against that mask. The base is
 * header-true but sparse (a mask reads only its shapes); the adapters are real files of random factors.
 * Beside it, in the same run, the plain numpy reference (bench/mask_numpy.py, Debian's python3-numpy).
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { decomposeJob } from '../src/engine/jobs/decompose';
import { maskJob } from '../src/engine/jobs/mask';
import { selectKernels } from '../src/engine/kernels/select';
import { buildHeader, SafetensorsWriter, TensorSpec } from '../src/engine/safetensors/writer';
import { quietContext } from '../src/engine/util/job';
import { findPython } from '../test/unit/helpers/python';
import { withKernels } from '../src/engine/kernels/kernels';

const HIDDEN = 3584;
const KV = 512;
/** LORA_LENS_BENCH_LAYERS=2 gives a quick run of the same shapes (for profiling). */
const LAYERS = Number(process.env.LORA_LENS_BENCH_LAYERS ?? 28);
const RANK = 32;
const ADAPTERS = 8;
const SHAPES: Record<string, [number, number]> = { q_proj: [HIDDEN, HIDDEN], k_proj: [KV, HIDDEN], v_proj: [KV, HIDDEN], o_proj: [HIDDEN, HIDDEN] };

const root = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-lens-bench-mask-'));
const modulePath = (l: number, p: string): string => `model.layers.${l}.self_attn.${p}`;

/** A model.safetensors with the real header and a sparse (unwritten) data region of the right size. */
function sparseBase(dir: string): void {
  fs.mkdirSync(dir);
  const specs: TensorSpec[] = [];
  for (let l = 0; l < LAYERS; l++) for (const [p, shape] of Object.entries(SHAPES)) specs.push({ name: `${modulePath(l, p)}.weight`, dtype: 'BF16', shape });
  const { header, sizes } = buildHeader(specs);
  const file = path.join(dir, 'model.safetensors');
  fs.writeFileSync(file, header);
  fs.truncateSync(file, header.length + sizes.reduce((a, b) => a + b, 0));
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify({ model_type: 'qwen2', hidden_size: HIDDEN, num_hidden_layers: LAYERS, num_attention_heads: 28, num_key_value_heads: 4 }));
}

function adapter(dir: string, seed: number): void {
  fs.mkdirSync(dir);
  const specs: TensorSpec[] = [];
  for (let l = 0; l < LAYERS; l++) {
    for (const [p, [out, inn]] of Object.entries(SHAPES)) {
      specs.push({ name: `base_model.model.${modulePath(l, p)}.lora_A.weight`, dtype: 'F32', shape: [RANK, inn] });
      specs.push({ name: `base_model.model.${modulePath(l, p)}.lora_B.weight`, dtype: 'F32', shape: [out, RANK] });
    }
  }
  const w = new SafetensorsWriter(path.join(dir, 'adapter_model.safetensors'), specs);
  let s = seed >>> 0 || 1;
  for (const spec of specs) {
    const v = new Float32Array(spec.shape[0] * spec.shape[1]);
    for (let i = 0; i < v.length; i++) {
      s ^= s << 13;
      s ^= s >>> 17;
      s ^= s << 5;
      v[i] = ((s >>> 0) / 2 ** 32 - 0.5) * 0.02;
    }
    w.write(spec.name, new Uint8Array(v.buffer));
  }
  w.finish();
  const config = { peft_type: 'LORA', r: RANK, lora_alpha: 2 * RANK, target_modules: Object.keys(SHAPES), fan_in_fan_out: false, use_rslora: false, use_dora: false };
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify(config));
}

/** Runs bench/mask_numpy.py on the same files and prints its time beside ours. */
function numpyReference(base: string, budget: number, maskDir: string, adapters: string[], oursS: number, oursCpuS: number): void {
  const { python, skip } = findPython(['numpy']);
  if (!python) {
    console.log(`numpy reference: skipped (${skip})`);
    return;
  }
  const script = path.join(__dirname, '..', '..', 'bench', 'mask_numpy.py');
  const r = spawnSync(python, [script, base, String(budget), maskDir, ...adapters], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`mask_numpy.py failed: ${r.stderr}`);
  const ref = JSON.parse(r.stdout) as { seconds: number; cpuSeconds: number; differingSelections: number };
  console.log(`numpy reference (float64 BLAS, argpartition): ${ref.seconds.toFixed(1)} s (${ref.cpuSeconds.toFixed(1)} s CPU, all threads)`);
  console.log(`  LoRA Lens / numpy: ${(oursS / ref.seconds).toFixed(2)} by wall clock, ${(oursCpuS / ref.cpuSeconds).toFixed(2)} by CPU time; selected elements that differ: ${ref.differingSelections}`);
}

async function main(): Promise<void> {
  console.log(`load average at start: ${os.loadavg().map((x) => x.toFixed(1)).join(' ')} on ${os.availableParallelism()} CPUs`);
  try {
    const t0 = performance.now();
    sparseBase(path.join(root, 'base'));
    const adapters = Array.from({ length: ADAPTERS }, (_, i) => path.join(root, `task${i}`));
    adapters.forEach((a, i) => adapter(a, 1000 + i));
    console.log(`generated base (sparse) and ${ADAPTERS} adapters in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    // The job's log lines (the backend, how many modules the certified float32 pass decided) are printed.
    const ctx = { ...quietContext(), log: (m: string) => console.log(`  ${m}`) };
    const kernels = await selectKernels('auto', ctx);
    const t1 = performance.now();
    const c1 = process.cpuUsage();
    const mask = await maskJob({ base: path.join(root, 'base'), adapters, budget: 100_000, out: path.join(root, 'mask') }, withKernels(ctx, kernels));
    const maskS = (performance.now() - t1) / 1000;
    const c = process.cpuUsage(c1);
    const maskCpuS = (c.user + c.system) / 1e6;
    console.log(`mask on ${kernels.description}: ${mask.elements.toLocaleString('en')} elements in ${mask.modules} modules -> ${mask.selected.toLocaleString('en')} kept (k = ${mask.k}) in ${maskS.toFixed(1)} s (${maskCpuS.toFixed(1)} s CPU, all threads)`);
    console.log(`  norm kept: ${Object.values(mask.normPreservation).map((x) => (x === null ? 'n/a' : x.toFixed(4))).join(', ')}`);
    numpyReference(path.join(root, 'base'), 100_000, path.join(root, 'mask'), adapters, maskS, maskCpuS);

    const t2 = performance.now();
    const d = await decomposeJob(
      {
        mask: path.join(root, 'mask'),
        base: path.join(root, 'base'),
        dictionary: adapters,
        target: adapters[3],
        method: 'omp',
        tol: 1e-6,
        supportThreshold: 1e-3,
        minT: 5,
        lambda: 1e-3,
        positive: true,
        maxResidual: 0.1,
      },
      withKernels(ctx, kernels),
    );
    console.log(`decompose (omp, adapter target, masked values only): support [${d.support.join(', ')}], relative residual ${d.relativeResidual.toExponential(2)} in ${((performance.now() - t2) / 1000).toFixed(2)} s`);
    console.log(`peak RSS ${(process.resourceUsage().maxRSS / 1024).toFixed(0)} MiB; load average at end: ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
    await kernels.dispose();
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
