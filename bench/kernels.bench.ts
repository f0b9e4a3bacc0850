/**
 * The CPU kernels one thread at a time: the LoRA expansion (3584 x 3584, rank 32, float64-exact) in
 * WebAssembly SIMD against the JavaScript reference, expanded and folded into a max (exactly, and the certified
 * mask's float32 pass); the top-k selection.
 * GFLOP/s count 2r flops per output element. Each figure is the median of 5 runs after a warm-up, by the
 * wall clock and by this process's CPU time (on a machine shared with other work, CPU time is the fairer
 * measure of one thread's speed).
 */
import * as os from 'node:os';
import { loraDeltaRows } from '../src/engine/kernels/cpuMath';
import { LoraFactors } from '../src/engine/kernels/kernels';
import { foldLoraRows, loraRows, wasmLora } from '../src/engine/kernels/wasm';
import { certifiedTopK, exactMaxAbsAt, float32Bound } from '../src/engine/unmerge/certified';
import { radixTopK, topK } from '../src/engine/unmerge/topk';

const N = 3584;
const R = 32;

function random(n: number, seed: number): Float32Array {
  let s = seed;
  return new Float32Array(n).map(() => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return ((s >>> 0) / 2 ** 32 - 0.5) * 0.02;
  });
}

function median(xs: number[]): number {
  return [...xs].sort((a, b) => a - b)[xs.length >> 1];
}

/** Median wall and CPU milliseconds of `f`. */
function time(f: () => void): { wall: number; cpu: number } {
  f();
  const wall: number[] = [];
  const cpu: number[] = [];
  for (let i = 0; i < 5; i++) {
    const c = process.cpuUsage();
    const t = performance.now();
    f();
    wall.push(performance.now() - t);
    const u = process.cpuUsage(c);
    cpu.push((u.user + u.system) / 1000);
  }
  return { wall: median(wall), cpu: median(cpu) };
}

function main(): void {
  console.log(`load average at start: ${os.loadavg().map((x) => x.toFixed(1)).join(' ')} on ${os.availableParallelism()} CPUs`);
  const f: LoraFactors = { A: random(R * N, 1), B: random(N * R, 2), r: R, out: N, in: N, scale: 2, transpose: false };
  const out = new Float32Array(N * N);
  const flops = 2 * R * N * N;
  const rate = (ms: number): string => `${(flops / ms / 1e6).toFixed(2)} GFLOP/s`;
  const row = (label: string, t: { wall: number; cpu: number }): void =>
    console.log(`${label}: ${t.wall.toFixed(0)} ms wall (${rate(t.wall)}), ${t.cpu.toFixed(0)} ms CPU (${rate(t.cpu)})`);
  row(`loraDelta ${N}x${N} r=${R}, WebAssembly SIMD, 1 thread`, time(() => loraRows(f, 0, N, out)));
  row(`loraDelta ${N}x${N} r=${R}, JavaScript reference, 1 thread`, time(() => loraDeltaRows(f, 0, N, out)));
  const acc = new Float32Array(N * N);
  row(`max |delta| fold ${N}x${N} r=${R}, WebAssembly SIMD, 1 thread`, time(() => foldLoraRows([f], 0, N, acc)));
  const acc32 = new Float32Array(N * N);
  row(`max |delta| fold ${N}x${N} r=${R}, float32 pass of the certified mask, WebAssembly SIMD, 1 thread`, time(() => foldLoraRows([f], 0, N, acc32, wasmLora(), true)));
  const bound = float32Bound([f])!;
  const cert = time(() => certifiedTopK(acc32, 892, bound, (idx) => exactMaxAbsAt([f], idx)));
  console.log(`certified top-k of the float32 pass (bound, candidates, exact recheck) k=892 of ${N * N}: ${cert.wall.toFixed(1)} ms wall, ${cert.cpu.toFixed(1)} ms CPU; bound setup ${time(() => float32Bound([f])).cpu.toFixed(1)} ms CPU`);
  const k = 892;
  const v = acc.map(Math.abs);
  const sel = (label: string, g: () => void): void => {
    const t = time(g);
    console.log(`${label} of ${N * N}: ${t.wall.toFixed(1)} ms wall, ${t.cpu.toFixed(1)} ms CPU`);
  };
  sel(`topK (chunk-maximum candidates) k=${k}`, () => topK(v, k));
  sel(`radixTopK (whole array) k=${k}`, () => radixTopK(v, k));
  console.log(`load average at end: ${os.loadavg().map((x) => x.toFixed(1)).join(' ')}`);
}

main();
