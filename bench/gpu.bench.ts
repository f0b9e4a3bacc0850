/**
 * Each kernel on the GPU backend against the CPU backend (main thread), on whatever WebGPU adapter is
 * present. On lavapipe (a Vulkan driver that runs on the CPU; CI and this project's machines) the
 * figures are CPU speed through a software driver, not GPU speed: the output says which it is.
 * Times include uploads and read-backs (what a job pays), median of 3 after a warm-up.
 * Set LORA_LENS_ALLOW_SOFTWARE_GPU=1 and the lavapipe environment (scripts/setup-lavapipe.sh) to run it there.
 */
import { CpuKernels } from '../src/engine/kernels/cpu';
import { GpuKernels } from '../src/engine/kernels/gpu/gpuKernels';
import { Kernels } from '../src/engine/kernels/kernels';
import { gpuKernels } from '../src/engine/kernels/select';
import { quietContext } from '../src/engine/util/job';

async function median(f: () => Promise<unknown>): Promise<number> {
  await f();
  const t: number[] = [];
  for (let i = 0; i < 3; i++) {
    const t0 = performance.now();
    await f();
    t.push(performance.now() - t0);
  }
  return t.sort((a, b) => a - b)[1];
}

function random(n: number, seed: number, scale: number): Float32Array {
  const x = new Float32Array(n);
  let s = seed;
  for (let i = 0; i < n; i++) {
    s = (s * 1103515245 + 12345) >>> 0;
    x[i] = (s / 2 ** 32 - 0.5) * scale;
  }
  return x;
}

async function main(): Promise<void> {
  const gpu = await gpuKernels(quietContext());
  if (!(gpu instanceof GpuKernels)) {
    console.log(`no GPU backend: ${gpu}`);
    return;
  }
  const cpu = new CpuKernels();
  const software = /software/.test(gpu.description);
  console.log(`GPU backend: ${gpu.description}${software ? '\n  NOTE: a software driver on the CPU: these are not GPU speeds' : ''}`);
  const N = 1 << 24;
  const w = random(N, 1, 0.1);
  const d = random(N, 2, 1e-3);
  const out = new Uint8Array(N * 4);
  const m = 3072, n = 3072, r = 32;
  const f = { A: random(r * n, 3, 0.1), B: random(m * r, 4, 0.1), r, in: n, out: m, scale: 2, transpose: false };
  const delta = new Float32Array(m * n);
  const rows: [string, (k: Kernels) => Promise<unknown>, number, number][] = [
    // name, run, bytes read+written, flops
    [`loraDelta ${m}x${n} r=${r}`, (k) => k.loraDelta(f, delta), (m * r + r * n + m * n) * 4, 2 * m * n * r],
    [`merge bf16 peft, ${N} elements`, (k) => k.merge(w, d, 'BF16', 'peft', out), N * 10, 0],
    [`merge fp16 fp32-cast, ${N} elements`, (k) => k.merge(w, d, 'F16', 'fp32-cast', out), N * 10, 0],
    [`pairStats, ${N} elements`, (k) => k.pairStats(w, d), N * 8, 0],
    [`precision bf16 peft, ${N} elements`, (k) => k.precision(w, d, 'BF16', 'peft'), N * 8, 0],
    [`subtract, ${N} elements`, (k) => k.subtract(w, d, new Float32Array(out.buffer, 0, N)), N * 12, 0],
    [`maxAbsInto, ${N} elements`, (k) => k.maxAbsInto(new Float32Array(out.buffer, 0, N), d), N * 12, 0],
  ];
  for (const [name, run, bytes, flops] of rows) {
    const tg = await median(() => run(gpu));
    const tc = await median(() => run(cpu));
    const rate = (t: number): string => `${(bytes / t / 1e6).toFixed(2)} GB/s${flops ? `, ${(flops / t / 1e6).toFixed(2)} GFLOP/s` : ''}`;
    console.log(`${name.padEnd(38)} gpu ${tg.toFixed(1).padStart(8)} ms (${rate(tg)})   cpu ${tc.toFixed(1).padStart(8)} ms (${rate(tc)})`);
  }
  console.log(`elements recomputed on the host after GPU flags: ${gpu.hostElements}, chunks wholly recomputed: ${gpu.hostTensors}`);
  await gpu.dispose();
}

main().then(() => process.exit(0), (e) => {
  console.error(e);
  process.exit(1);
});
