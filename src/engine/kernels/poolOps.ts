/**
 * The slices of kernels that the CPU backend's worker threads run, as messages: each names an op, its
 * arrays (views of SharedArrayBuffers, so no data is copied) and the element or row range to do. The
 * main thread runs the same function when a tensor is too small to be worth splitting.
 */
import { elementBytes, FloatDtype } from '../../shared/safetensors/dtypes';
import { decodeF16Array } from '../../shared/safetensors/half';
import { allFinite, maxAbsRange, mergeRange, pairStatsRange, precisionRange, subtractRange } from './cpuMath';
import { HalfDtype, LoraFactors, MergeDtype, PairStats, PrecisionStats } from './kernels';
import { decodeBf16, foldLoraRows, loraRows, wasmLora } from './wasm';
import { factorSingularValues, linalgOn } from './wasmLinalg';
import { factorModule, ModuleFactors, ModuleSpec } from '../linalg/moduleFactors';
import { MergeRule } from '../../shared/jobs/choices';

/**
 * Statistics are summed per chunk of this many elements, and the chunks' sums are added in order:
 * the same float64 result however many threads share the work (a tensor of at most one chunk gives
 * exactly the single-threaded figures).
 */
export const STATS_CHUNK = 1 << 16;

export type PoolOp =
  | { op: 'loraDelta'; f: LoraFactors; out: Float32Array; i0: number; i1: number }
  | { op: 'merge'; w: Float32Array; d: Float32Array | null; dtype: MergeDtype; rule: MergeRule; out: Uint8Array; i0: number; i1: number }
  | { op: 'pairStats'; a: Float32Array; b: Float32Array | null; i0: number; i1: number }
  | { op: 'precision'; w: Float32Array; d: Float32Array | null; dtype: HalfDtype; rule: MergeRule; i0: number; i1: number }
  | { op: 'subtract'; a: Float32Array; b: Float32Array; out: Float32Array; i0: number; i1: number }
  | { op: 'maxAbsInto'; acc: Float32Array; x: Float32Array; i0: number; i1: number }
  | { op: 'maxAbsLora'; fs: LoraFactors[]; acc: Float32Array; float32: boolean; i0: number; i1: number }
  | { op: 'decodeHalf'; dtype: 'F16' | 'BF16'; raw: Uint8Array; out: Float32Array; i0: number; i1: number }
  | { op: 'allFinite'; dtype: FloatDtype; raw: Uint8Array; i0: number; i1: number }
  | LinalgOp;

/**
 * Kernels of the low-rank toolbox on a job's shared WebAssembly memory (wasmLinalg.ts's Arena), known
 * by its id once 'linalgMemory' has brought the memory itself to the thread. Offsets are in bytes.
 */
export type LinalgOp = { mem: number } & (
  | { op: 'linalgMemory'; memory: WebAssembly.Memory }
  | { op: 'factorSpectrum'; a: number; b: number; r: number; inn: number; out: number; scratch: number }
  | { op: 'factorModule'; tau: number; ws: number; spec: ModuleSpec }
);

/** What an op returns: nothing (it wrote its output range), the statistics of each chunk of its range, a yes/no, or a module's factors. */
export type PoolResult = void | PairStats[] | PrecisionStats[] | boolean | Float64Array | ModuleFactors;

/** Runs one op on the calling thread (a module's factorization: asynchronously). `i0` of a statistics op is at a chunk boundary. */
export function runOp(m: PoolOp): PoolResult | Promise<PoolResult> {
  switch (m.op) {
    case 'loraDelta':
      return loraRows(m.f, m.i0, m.i1, m.out);
    case 'merge':
      return mergeRange(m.w, m.d, m.dtype, m.rule, m.out, m.i0, m.i1);
    case 'pairStats':
      return perChunk(m.i0, m.i1, (c0, c1) => pairStatsRange(m.a, m.b, c0, c1));
    case 'precision':
      return perChunk(m.i0, m.i1, (c0, c1) => precisionRange(m.w, m.d, m.dtype, m.rule, c0, c1));
    case 'subtract':
      return subtractRange(m.a, m.b, m.out, m.i0, m.i1);
    case 'maxAbsInto':
      return maxAbsRange(m.acc, m.x, m.i0, m.i1);
    case 'maxAbsLora':
      return foldLoraRows(m.fs, m.i0, m.i1, m.acc, wasmLora(), m.float32);
    case 'decodeHalf': {
      const h = new Uint16Array(m.raw.buffer, m.raw.byteOffset + m.i0 * 2, m.i1 - m.i0);
      (m.dtype === 'F16' ? decodeF16Array : decodeBf16)(h, m.out.subarray(m.i0, m.i1));
      return;
    }
    case 'allFinite': {
      const eb = elementBytes(m.dtype);
      return allFinite(m.dtype, m.raw.subarray(m.i0 * eb, m.i1 * eb));
    }
    case 'linalgMemory':
      linalgOn(m.mem, m.memory);
      return;
    case 'factorSpectrum':
      return factorSingularValues(linalgOn(m.mem), m.a, m.b, m.r, m.inn, m.out, m.scratch);
    case 'factorModule': {
      const w = linalgOn(m.mem);
      const { m: rows, n } = m.spec;
      return factorModule(w.operator(m.tau, rows, n, m.ws), (P, Qt, k) => w.residualSq(m.tau, rows, n, P, Qt, k, m.ws), m.spec);
    }
  }
}

/**
 * A typed array as posted to a worker: its SharedArrayBuffer by id, sent along only the first time that
 * worker sees it (posting a SharedArrayBuffer costs far more than the small kernels it would carry).
 */
export interface WireArray {
  wire: 'F32' | 'U8';
  id: number;
  byteOffset: number;
  length: number;
  buffer?: SharedArrayBuffer;
}

/** A copy of `op` with each typed array (also those of the factors, `f` and each of `fs`) replaced by `f(array)`. */
export function mapArrays<A, B>(op: Record<string, unknown>, isArray: (x: unknown) => x is A, f: (x: A) => B): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const factors = (v: unknown): Record<string, unknown> => mapArrays(v as Record<string, unknown>, isArray, f);
  for (const [k, v] of Object.entries(op)) {
    if (isArray(v)) out[k] = f(v);
    else if (k === 'f' && v !== null && typeof v === 'object') out[k] = factors(v);
    else if (k === 'fs' && Array.isArray(v)) out[k] = v.map(factors);
    else out[k] = v;
  }
  return out;
}

function perChunk<T>(i0: number, i1: number, f: (c0: number, c1: number) => T): T[] {
  const out: T[] = [];
  for (let c = i0; c < i1 || out.length === 0; c += STATS_CHUNK) out.push(f(c, Math.min(i1, c + STATS_CHUNK)));
  return out;
}
