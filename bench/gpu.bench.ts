/**
 * The GPU backend against the CPU backend, on whatever WebGPU adapter is present, in three parts:
 * - `bandwidth`: the card's own memory bandwidth (a device-to-device copy and a streaming-read kernel),
 *   and host -> device (writeBuffer) and device -> host (map) transfer rates, measured in the same run;
 * - `kernels`: each kernel of the Kernels interface, GB/s and GFLOP/s, times including uploads and
 *   read-backs (what a job pays), median of 3 after a warm-up, GPU vs CPU;
 * - `jobs`: whole `lora-lens merge`, `compare` and `mask` runs (dist/cli.js, one process each) on a
 *   synthetic StarCoder2-3B-shaped model cut to a few layers, `--device gpu` vs `--device cpu`, checking
 *   that the merged files are byte-identical.
 *
 * Options: `--only bandwidth,kernels,jobs` (default all), `--json FILE` (every figure), `--layers N`
 * (jobs: layers of the model, default 4), `--cpu-reps N` (kernels: timed CPU runs, default 3), `--quick`
 * (small sizes and a hidden-512 model: a smoke test of the bench itself, on lavapipe in a minute).
 * On lavapipe (a Vulkan driver running on the CPU; CI and this project's machines) the figures are
 * CPU speed through a software driver, not GPU speed: the output says which it is. There, set
 * LORA_LENS_ALLOW_SOFTWARE_GPU=1 and the environment scripts/setup-lavapipe.sh prints.
 * scripts/device/run-on-device.sh runs this on an NVIDIA H100/H200 (docs/gpu.md).
 */
/// <reference types="@webgpu/types" />
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { openGpu } from '../src/engine/kernels/gpu/dawn';
import { GpuKernels } from '../src/engine/kernels/gpu/gpuKernels';
import { Kernels } from '../src/engine/kernels/kernels';
import { gpuKernels, selectKernels } from '../src/engine/kernels/select';
import { writeSyntheticAdapter } from '../src/engine/synthetic/adapter';
import { STARCODER2_3B } from '../src/engine/synthetic/configs';
import { writeSyntheticModel } from '../src/engine/synthetic/model';
import { quietContext } from '../src/engine/util/job';

const CLI = path.resolve(__dirname, '../../dist/cli.js');

function option(name: string, fallback: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}
const parts = new Set(option('only', 'bandwidth,kernels,jobs').split(','));
const jsonOut = option('json', '');
const layers = Number(option('layers', '4'));
const cpuReps = Number(option('cpu-reps', '3'));
const quick = process.argv.includes('--quick');
const results: Record<string, unknown> = {};

async function median(f: () => Promise<unknown>, reps = 3): Promise<number> {
  await f();
  const t: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    await f();
    t.push(performance.now() - t0);
  }
  return t.sort((a, b) => a - b)[Math.floor((t.length - 1) / 2)];
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

/** Device memory bandwidth and host <-> device transfer rates, timed by queue completion (median of 5). */
async function bandwidth(): Promise<void> {
  const opened = await openGpu();
  if (!opened.ok) return;
  const dev = opened.gpu.device;
  const U = opened.gpu.bufferUsage;
  const limit = Math.min(dev.limits.maxStorageBufferBindingSize, dev.limits.maxBufferSize);
  const bytes = Math.min(1 << 30, Math.floor(limit / 256) * 256);
  const a = dev.createBuffer({ size: bytes, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST });
  const b = dev.createBuffer({ size: bytes, usage: U.STORAGE | U.COPY_SRC | U.COPY_DST });
  const time = async (reps: number, enqueue: (enc: GPUCommandEncoder) => void): Promise<number> => {
    const t: number[] = [];
    for (let k = 0; k < 6; k++) {
      const enc = dev.createCommandEncoder();
      for (let i = 0; i < reps; i++) enqueue(enc);
      const t0 = performance.now();
      dev.queue.submit([enc.finish()]);
      await dev.queue.onSubmittedWorkDone();
      if (k > 0) t.push((performance.now() - t0) / reps);
    }
    return t.sort((x, y) => x - y)[2];
  };
  const copyMs = await time(10, (enc) => enc.copyBufferToBuffer(a, 0, b, 0, bytes));
  const wg = 256;
  const groups = Math.min(dev.limits.maxComputeWorkgroupsPerDimension, 8192);
  const sink = dev.createBuffer({ size: groups * wg * 4, usage: U.STORAGE });
  const module = dev.createShaderModule({
    code: /* wgsl */ `
@group(0) @binding(0) var<storage, read> src: array<vec4u>;
@group(0) @binding(1) var<storage, read_write> sink: array<u32>;
@compute @workgroup_size(${wg})
fn main(@builtin(global_invocation_id) g: vec3u, @builtin(num_workgroups) nw: vec3u) {
  var acc = vec4u(0u);
  for (var i = g.x; i < arrayLength(&src); i += nw.x * ${wg}u) { acc ^= src[i]; }
  sink[g.x] = acc.x ^ acc.y ^ acc.z ^ acc.w;
}`,
  });
  const pipeline = await dev.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  const group = dev.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: a } },
      { binding: 1, resource: { buffer: sink } },
    ],
  });
  const readMs = await time(10, (enc) => {
    const pass = enc.beginComputePass();
    pass.setPipeline(pipeline);
    pass.setBindGroup(0, group);
    pass.dispatchWorkgroups(groups);
    pass.end();
  });
  const host = new Uint8Array(Math.min(bytes, 256 << 20));
  const upload: number[] = [];
  const download: number[] = [];
  const staging = dev.createBuffer({ size: host.byteLength, usage: U.MAP_READ | U.COPY_DST });
  for (let k = 0; k < 6; k++) {
    let t0 = performance.now();
    dev.queue.writeBuffer(a, 0, host);
    await dev.queue.onSubmittedWorkDone();
    if (k > 0) upload.push(performance.now() - t0);
    const enc = dev.createCommandEncoder();
    enc.copyBufferToBuffer(a, 0, staging, 0, host.byteLength);
    t0 = performance.now();
    dev.queue.submit([enc.finish()]);
    await staging.mapAsync(opened.gpu.mapRead);
    host.set(new Uint8Array(staging.getMappedRange()));
    staging.unmap();
    if (k > 0) download.push(performance.now() - t0);
  }
  const med = (x: number[]): number => x.sort((p, q) => p - q)[2];
  const r = {
    bufferBytes: bytes,
    deviceCopyGBs: (2 * bytes) / copyMs / 1e6,
    deviceReadGBs: bytes / readMs / 1e6,
    hostToDeviceGBs: host.byteLength / med(upload) / 1e6,
    deviceToHostGBs: host.byteLength / med(download) / 1e6,
  };
  results.bandwidth = r;
  console.log(`memory bandwidth (${(bytes / 2 ** 20).toFixed(0)} MiB buffers):`);
  console.log(`  device copy ${r.deviceCopyGBs.toFixed(1)} GB/s (read + write), streaming read ${r.deviceReadGBs.toFixed(1)} GB/s`);
  console.log(`  host -> device ${r.hostToDeviceGBs.toFixed(2)} GB/s, device -> host ${r.deviceToHostGBs.toFixed(2)} GB/s (${(host.byteLength / 2 ** 20).toFixed(0)} MiB)`);
  for (const x of [a, b, sink, staging]) x.destroy();
}

async function kernels(gpu: GpuKernels, cpu: Kernels): Promise<void> {
  const N = quick ? 1 << 18 : 1 << 24;
  const w = random(N, 1, 0.1);
  const d = random(N, 2, 1e-3);
  const out = new Uint8Array(N * 4);
  const expansions: [number, number, number][] = quick ? [[512, 512, 16]] : [[3072, 3072, 32], [4096, 4096, 64], [8192, 8192, 16]];
  const rows: [string, (k: Kernels) => Promise<unknown>, number, number][] = [];
  for (const [m, n, r] of expansions) {
    const f = { A: random(r * n, 3, 0.1), B: random(m * r, 4, 0.1), r, in: n, out: m, scale: 2, transpose: false };
    const delta = new Float32Array(m * n);
    // name, run, bytes read + written, flops
    rows.push([`loraDelta ${m}x${n} r=${r}`, (k) => k.loraDelta(f, delta), (m * r + r * n + m * n) * 4, 2 * m * n * r]);
  }
  const rowsDora = quick ? 256 : 4096, colsDora = N / rowsDora;
  const factor = random(rowsDora, 5, 1).map((x) => 1 + Math.abs(x));
  const dora = { w, d, rows: rowsDora, cols: colsDora, featureIsColumn: false, dtype: 'BF16', rule: 'peft' } as const;
  rows.push(
    [`merge bf16 peft, ${N} elements`, (k) => k.merge(w, d, 'BF16', 'peft', out), N * 10, 0],
    [`merge fp16 fp32-cast, ${N} elements`, (k) => k.merge(w, d, 'F16', 'fp32-cast', out), N * 10, 0],
    [`merge fp32, ${N} elements`, (k) => k.merge(w, d, 'F32', 'peft', out), N * 12, 0],
    [`doraNorms bf16 ${rowsDora}x${colsDora}`, (k) => k.doraNorms(dora), N * 8, 0],
    [`mergeDora bf16 ${rowsDora}x${colsDora}`, (k) => k.mergeDora(dora, factor, out), N * 10, 0],
    [`pairStats, ${N} elements`, (k) => k.pairStats(w, d), N * 8, 0],
    [`precision bf16 peft, ${N} elements`, (k) => k.precision(w, d, 'BF16', 'peft'), N * 8, 0],
    [`subtract, ${N} elements`, (k) => k.subtract(w, d, new Float32Array(out.buffer, 0, N)), N * 12, 0],
    [`maxAbsInto, ${N} elements`, (k) => k.maxAbsInto(new Float32Array(out.buffer, 0, N), d), N * 12, 0],
  );
  const table: Record<string, unknown>[] = [];
  console.log(`kernels (times include uploads and read-backs; CPU: ${cpu.description}):`);
  for (const [name, run, bytes, flops] of rows) {
    const tg = await median(() => run(gpu));
    const tc = await median(() => run(cpu), cpuReps);
    const rate = (t: number): string => `${(bytes / t / 1e6).toFixed(2)} GB/s${flops ? `, ${(flops / t / 1e6).toFixed(1)} GFLOP/s` : ''}`;
    console.log(`  ${name.padEnd(38)} gpu ${tg.toFixed(1).padStart(8)} ms (${rate(tg)})   cpu ${tc.toFixed(1).padStart(8)} ms (${rate(tc)})`);
    table.push({
      kernel: name,
      gpuMs: tg,
      cpuMs: tc,
      bytes,
      flops,
      gpuGBs: bytes / tg / 1e6,
      cpuGBs: bytes / tc / 1e6,
      gpuGFLOPs: flops / tg / 1e6,
      cpuGFLOPs: flops / tc / 1e6,
    });
  }
  results.kernels = table;
  results.hostRecomputed = { elements: gpu.hostElements, chunksOrTensors: gpu.hostTensors, failure: gpu.failure ?? null };
  console.log(`  elements recomputed on the host after GPU flags: ${gpu.hostElements}, chunks or tensors wholly on the host: ${gpu.hostTensors}${gpu.failure ? `; GPU FAILURE: ${gpu.failure}` : ''}`);
}

function cli(args: string[]): { ms: number; report: Record<string, unknown> } {
  const t0 = performance.now();
  const r = spawnSync(process.execPath, [CLI, ...args, '--json', '-'], { encoding: 'utf8', maxBuffer: 1 << 28 });
  const ms = performance.now() - t0;
  if (r.status !== 0) throw new Error(`lora-lens ${args.join(' ')} exited ${r.status}: ${r.stderr}`);
  return { ms, report: JSON.parse(r.stdout) as Record<string, unknown> };
}

function digest(dir: string): string {
  const h = crypto.createHash('sha256');
  for (const f of fs.readdirSync(dir).filter((x) => x.endsWith('.safetensors')).sort()) h.update(fs.readFileSync(path.join(dir, f)));
  return h.digest('hex');
}

async function jobs(): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-lens-bench-gpu-'));
  try {
    const config = quick
      ? { ...STARCODER2_3B, num_hidden_layers: layers, hidden_size: 512, intermediate_size: 2048, num_attention_heads: 8, vocab_size: 4096 }
      : { ...STARCODER2_3B, num_hidden_layers: layers };
    const t0 = performance.now();
    const base = writeSyntheticModel(path.join(root, 'base'), config, { dtype: 'BF16' });
    const adapters = [1, 2, 3, 4].map((seed) => writeSyntheticAdapter(path.join(root, `adapter${seed}`), config, { targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], r: 16, seed }).dir);
    console.log(`jobs on a StarCoder2-3B-shaped model${quick ? ' (hidden 512)' : ''} cut to ${layers} layers (${(base.dataBytes / 1e9).toFixed(2)} GB bf16; written in ${((performance.now() - t0) / 1000).toFixed(1)} s), r=16 on q/k/v/o:`);
    const finetuned = path.join(root, 'finetuned');
    cli(['merge', '--base', base.dir, '--adapter', adapters[0], '--out', finetuned, '--dtype', 'fp32', '--device', 'cpu']);
    const steps: [string, (device: string) => string[], boolean][] = [
      ['merge bf16 peft', (dv) => ['merge', '--base', base.dir, '--adapter', adapters[0], '--out', path.join(root, `merged-${dv}`), '--dtype', 'bf16', '--device', dv], true],
      ['merge fp32', (dv) => ['merge', '--base', base.dir, '--adapter', adapters[0], '--out', path.join(root, `merged32-${dv}`), '--dtype', 'fp32', '--device', dv], true],
      ['compare (vs the fp32 merge)', (dv) => ['compare', '--base', base.dir, '--adapter', adapters[0], '--finetuned', finetuned, '--out', path.join(root, `compare-${dv}`), '--device', dv], false],
      ['mask (4 adapters, budget 100000)', (dv) => ['mask', '--base', base.dir, '--adapters', ...adapters, '--budget', '100000', '--out', path.join(root, `mask-${dv}`), '--device', dv], false],
    ];
    const table: Record<string, unknown>[] = [];
    for (const [name, args, merged] of steps) {
      const gpu = cli(args('gpu'));
      const cpu = cli(args('cpu'));
      let identical: boolean | undefined;
      if (merged) identical = digest(String(gpu.report.out)) === digest(String(cpu.report.out));
      else if (name.startsWith('mask')) identical = digest(path.join(root, 'mask-gpu')) === digest(path.join(root, 'mask-cpu'));
      const device = String(gpu.report.device ?? '(report has no device field)');
      console.log(`  ${name.padEnd(34)} gpu ${(gpu.ms / 1000).toFixed(2).padStart(7)} s   cpu ${(cpu.ms / 1000).toFixed(2).padStart(7)} s   x${(cpu.ms / gpu.ms).toFixed(2)}${identical === undefined ? '' : identical ? '   outputs byte-identical' : '   OUTPUTS DIFFER'}`);
      table.push({ job: name, gpuSeconds: gpu.ms / 1000, cpuSeconds: cpu.ms / 1000, identical, gpuDevice: device, cpuDevice: cpu.report.device });
    }
    results.jobs = { layers, dataBytes: base.dataBytes, steps: table };
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const ctx = quietContext();
  const gpu = await gpuKernels(ctx);
  if (!(gpu instanceof GpuKernels)) {
    console.log(`no GPU backend: ${gpu}`);
    results.error = gpu;
    return;
  }
  const software = /software/.test(gpu.description);
  const opened = await openGpu();
  const limits = opened.ok ? opened.gpu.device.limits : undefined;
  results.adapter = gpu.description;
  results.software = software;
  results.limits = limits && {
    maxStorageBufferBindingSize: limits.maxStorageBufferBindingSize,
    maxBufferSize: limits.maxBufferSize,
    maxComputeWorkgroupsPerDimension: limits.maxComputeWorkgroupsPerDimension,
  };
  console.log(`GPU backend: ${gpu.description}${software ? '\n  NOTE: a software driver on the CPU: these are not GPU speeds' : ''}`);
  if (limits) console.log(`  limits: storage binding ${limits.maxStorageBufferBindingSize} B, buffer ${limits.maxBufferSize} B`);
  const cpu = await selectKernels('cpu', ctx);
  try {
    if (parts.has('bandwidth')) await bandwidth();
    if (parts.has('kernels')) await kernels(gpu, cpu);
    if (parts.has('jobs')) await jobs();
  } finally {
    await gpu.dispose();
    await cpu.dispose();
  }
}

main().then(
  () => {
    if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(results, null, 2) + '\n');
    process.exit(0);
  },
  (e) => {
    console.error(e);
    results.error = String((e as Error).stack ?? e);
    if (jsonOut) fs.writeFileSync(jsonOut, JSON.stringify(results, null, 2) + '\n');
    process.exit(1);
  },
);
