/**
 * The CPU backend's WebAssembly kernel (wasm/kernels.wat, assembled by the build into dist/kernels.wasm):
 * rows of the LoRA delta, bit-identical to cpuMath.ts's loraDeltaRows, or folded into a |max| aggregate;
 * and bf16 widening.
 * Each thread (the main one, each worker) instantiates its own copy with its own memory: the factors
 * and a block of output rows are copied in, the block is copied out. The copies are a few percent of
 * the work (2r flops per element written); memory-bound kernels stay in JavaScript, where they read
 * the shared buffers in place.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { decodeBf16Array } from '../../shared/safetensors/half';
import { loraDeltaRows, maxAbsRange } from './cpuMath';
import { LoraFactors } from './kernels';

/** Where the build puts the module: beside the bundles (dist/), or dist/ seen from the unbundled out/src/engine/kernels/. */
function wasmFile(): string | undefined {
  return [path.join(__dirname, 'kernels.wasm'), path.join(__dirname, '..', '..', '..', '..', 'dist', 'kernels.wasm')].find((f) => fs.existsSync(f));
}

interface Exports {
  memory: WebAssembly.Memory;
  bf16(src: number, n: number, dst: number): void;
  lora32(a: number, b: number, rows: number, r: number, n: number, scale: number, out: number, W: number): void;
  lora(
    a: number,
    b: number,
    rows: number,
    r: number,
    n: number,
    scale: number,
    out: number,
    fold: number,
    nks: number,
    koff: number,
    bval: number,
    at: number,
    W: number,
  ): void;
}

/** Output elements per call: the block (and A's column tile) stay in the L2 cache until copied out. */
const BLOCK_ELEMENTS = 1 << 16;
/** A's column tile in float64 is about this many bytes (r x W x 8), W a multiple of 16. */
const TILE_BYTES = 32 << 10;
/** The float32 pass's tile of A (r x W x 4), W a multiple of 32: in the L1 cache beside the output row. */
const TILE_BYTES_32 = 16 << 10;

/** What `rows` does with each delta block: write it (one set), fold it exactly, or fold its float32 approximation. */
export type RowsMode = 'write' | 'fold' | 'fold32';

/** bf16 values decoded per call: the block in and out stays in the L2 cache. */
const DECODE_BLOCK = 1 << 15;

const align = (x: number, a: number): number => Math.ceil(x / a) * a;

export class WasmLora {
  private constructor(private readonly x: Exports) {}

  static load(file = wasmFile()): WasmLora | undefined {
    if (file === undefined) return undefined;
    const instance = new WebAssembly.Instance(new WebAssembly.Module(fs.readFileSync(file)));
    return new WasmLora(instance.exports as unknown as Exports);
  }

  /**
   * Rows [row0, row1) of every factor set's delta (all of one out x in shape and orientation, each of
   * its own rank and scale), written into `out` (one set; the whole tensor, as loraDeltaRows writes) or
   * folded into it: out[i] = max(out[i], |delta[i]|) per set in turn, as maxAbsRange does. `fold32`
   * folds the float32 approximation instead (lora32 in kernels.wat; certified.ts bounds its error).
   */
  rows(fs: LoraFactors[], row0: number, row1: number, out: Float32Array, mode: RowsMode): void {
    if (fs.length === 0 || row1 <= row0) return;
    const { in: n, out: m, transpose } = fs[0];
    if (fs.some((f) => f.in !== n || f.out !== m || f.transpose !== transpose)) throw new Error('folded LoRA deltas must have one shape and orientation');
    const exact = mode !== 'fold32';
    const rMax = Math.max(1, ...fs.map((f) => f.r));
    const W = exact ? Math.max(16, Math.floor(TILE_BYTES / (8 * rMax) / 16) * 16) : Math.max(32, Math.floor(TILE_BYTES_32 / (4 * rMax) / 32) * 32);
    const R = Math.max(1, Math.min(row1 - row0, Math.floor(BLOCK_ELEMENTS / Math.max(1, n))));
    // Layout: each set's A and its block of B, then (exact) nks, koff, bval, A's tile in float64, then the output rows.
    const pA: number[] = [];
    const pB: number[] = [];
    let p = 0;
    for (const f of fs) {
      pA.push(p);
      p += align(f.r * n * 4, 16);
      pB.push(p);
      p += align(R * f.r * 4, 16);
    }
    const pNks = p;
    const pKoff = pNks + align(R * 4, 16);
    const pBval = pKoff + align(R * rMax * 4, 16);
    const pAt = pBval + align(R * rMax * 8, 16);
    const pOut = exact ? pAt + align(rMax * W * 8, 16) : p;
    const f32 = new Float32Array(this.memory(pOut + R * n * 4).buffer);
    fs.forEach((f, s) => f32.set(f.A.subarray(0, f.r * n), pA[s] >> 2));
    for (let i0 = row0; i0 < row1; i0 += R) {
      const rows = Math.min(R, row1 - i0);
      const block = f32.subarray(pOut >> 2, (pOut >> 2) + rows * n);
      if (mode !== 'write') gather(out, block, i0, rows, n, m, transpose);
      fs.forEach((f, s) => {
        f32.set(f.B.subarray(i0 * f.r, (i0 + rows) * f.r), pB[s] >> 2);
        if (exact) this.x.lora(pA[s], pB[s], rows, f.r, n, f.scale, pOut, mode === 'fold' ? 1 : 0, pNks, pKoff, pBval, pAt, W);
        else this.x.lora32(pA[s], pB[s], rows, f.r, n, Math.fround(f.scale), pOut, W);
      });
      scatter(block, out, i0, rows, n, m, transpose);
    }
  }

  /** decodeBf16Array(src, out) in blocks through this instance's memory (memory-bound, yet about 3x the JavaScript loop with the copies). */
  decodeBf16(src: Uint16Array, out: Float32Array): Float32Array {
    const block = Math.min(src.length, DECODE_BLOCK);
    const at = align(block * 2, 16);
    const mem = this.memory(at + block * 4);
    const u16 = new Uint16Array(mem.buffer, 0, block);
    const f32 = new Float32Array(mem.buffer, at, block);
    for (let i0 = 0; i0 < src.length; i0 += block) {
      const n = Math.min(block, src.length - i0);
      u16.set(src.subarray(i0, i0 + n));
      this.x.bf16(0, n, at);
      out.set(n === block ? f32 : f32.subarray(0, n), i0);
    }
    return out;
  }

  private memory(bytes: number): WebAssembly.Memory {
    const mem = this.x.memory;
    const pages = Math.ceil(bytes / 65536) - mem.buffer.byteLength / 65536;
    if (pages > 0) mem.grow(pages);
    return mem;
  }
}

/** Rows [i0, i0 + rows) of `out` (m x n, or n x m when transposed) into the row-major block. */
function gather(out: Float32Array, block: Float32Array, i0: number, rows: number, n: number, m: number, transpose: boolean): void {
  if (!transpose) {
    block.set(out.subarray(i0 * n, (i0 + rows) * n));
    return;
  }
  for (let i = 0; i < rows; i++) for (let j = 0; j < n; j++) block[i * n + j] = out[j * m + i0 + i];
}

function scatter(block: Float32Array, out: Float32Array, i0: number, rows: number, n: number, m: number, transpose: boolean): void {
  if (!transpose) {
    out.set(block, i0 * n);
    return;
  }
  for (let i = 0; i < rows; i++) for (let j = 0; j < n; j++) out[j * m + i0 + i] = block[i * n + j];
}

let loaded: WasmLora | undefined | null = null;

/** This thread's instance, or undefined where the module is missing (then the JavaScript kernels run). */
export function wasmLora(): WasmLora | undefined {
  if (loaded === null) loaded = WasmLora.load();
  return loaded;
}

/** Rows [row0, row1) of the LoRA delta into `out` (loraDeltaRows' result): in WebAssembly where it loads (`w` null: in JavaScript). */
export function loraRows(f: LoraFactors, row0: number, row1: number, out: Float32Array, w: WasmLora | null | undefined = wasmLora()): void {
  if (w) w.rows([f], row0, row1, out, 'write');
  else loraDeltaRows(f, row0, row1, out);
}

/** decodeBf16Array in WebAssembly where it loads. */
export function decodeBf16(src: Uint16Array, out: Float32Array): Float32Array {
  const w = wasmLora();
  return w ? w.decodeBf16(src, out) : decodeBf16Array(src, out);
}

/**
 * Rows [row0, row1) of maxAbsInto(acc, loraDelta(f)) for each f in turn: in WebAssembly where it loads
 * (`w` null: in JavaScript). `float32`: the float32 approximation in WebAssembly (the exact values in JavaScript).
 */
export function foldLoraRows(
  fs: LoraFactors[],
  row0: number,
  row1: number,
  acc: Float32Array,
  w: WasmLora | null | undefined = wasmLora(),
  float32 = false,
): void {
  if (w) return w.rows(fs, row0, row1, acc, float32 ? 'fold32' : 'fold');
  const delta = new Float32Array(acc.length);
  for (const f of fs) {
    loraDeltaRows(f, row0, row1, delta);
    // The rows' elements: a range of acc, or (transposed) columns of it.
    if (f.transpose) for (let j = 0; j < f.in; j++) maxAbsRange(acc, delta, j * f.out + row0, j * f.out + row1);
    else maxAbsRange(acc, delta, row0 * f.in, row1 * f.in);
  }
}
