/**
 * The CPU backend's WebAssembly kernel (wasm/kernels.wat, assembled by the build into dist/kernels.wasm):
 * rows of the LoRA delta, bit-identical to cpuMath.ts's loraDeltaRows, or folded into a |max| aggregate.
 * Each thread (the main one, each worker) instantiates its own copy with its own memory: the factors
 * and a block of output rows are copied in, the block is copied out. The copies are a few percent of
 * the work (2r flops per element written); memory-bound kernels stay in JavaScript, where they read
 * the shared buffers in place.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loraDeltaRows } from './cpuMath';
import { LoraFactors } from './kernels';

/** Where the build puts the module: beside the bundles (dist/), or dist/ seen from the unbundled out/src/engine/kernels/. */
function wasmFile(): string | undefined {
  return [path.join(__dirname, 'kernels.wasm'), path.join(__dirname, '..', '..', '..', '..', 'dist', 'kernels.wasm')].find((f) => fs.existsSync(f));
}

interface Exports {
  memory: WebAssembly.Memory;
  lora(a: number, b: number, rows: number, r: number, n: number, scale: number, out: number, fold: number, nks: number, koff: number, bval: number, at: number, W: number): void;
}

/** Output elements per call: the block (and A's column tile) stay in the L2 cache until copied out. */
const BLOCK_ELEMENTS = 1 << 16;
/** A's column tile in float64 is about this many bytes (r x W x 8), W a multiple of 16. */
const TILE_BYTES = 32 << 10;

const align = (x: number, a: number): number => Math.ceil(x / a) * a;

export class WasmLora {
  private constructor(private readonly x: Exports) {}

  static load(file = wasmFile()): WasmLora | undefined {
    if (file === undefined) return undefined;
    const instance = new WebAssembly.Instance(new WebAssembly.Module(fs.readFileSync(file)));
    return new WasmLora(instance.exports as unknown as Exports);
  }

  /**
   * Rows [row0, row1) of every factor set's delta (all of one shape), written into `out` (one set; the
   * whole tensor, as loraDeltaRows writes) or folded into it: out[i] = max(out[i], |delta[i]|) per set in
   * turn, as maxAbsRange does.
   */
  rows(fs: LoraFactors[], row0: number, row1: number, out: Float32Array, fold: boolean): void {
    if (fs.length === 0 || row1 <= row0) return;
    const { r, in: n, out: m, transpose } = fs[0];
    const W = Math.max(16, Math.floor(TILE_BYTES / (8 * Math.max(1, r)) / 16) * 16);
    const R = Math.max(1, Math.min(row1 - row0, Math.floor(BLOCK_ELEMENTS / Math.max(1, n))));
    // Layout: every A, then one block's B of each set, nks, koff, bval, A's tile, the output rows.
    const aBytes = align(r * n * 4, 16);
    const bBytes = align(R * r * 4, 16);
    const pB = fs.length * aBytes;
    const pNks = pB + fs.length * bBytes;
    const pKoff = pNks + align(R * 4, 16);
    const pBval = pKoff + align(R * r * 4, 16);
    const pAt = pBval + align(R * r * 8, 16);
    const pOut = pAt + align(r * W * 8, 16);
    const mem = this.memory(pOut + R * n * 4);
    const f32 = new Float32Array(mem.buffer);
    fs.forEach((f, s) => f32.set(f.A.subarray(0, r * n), (s * aBytes) >> 2));
    for (let i0 = row0; i0 < row1; i0 += R) {
      const rows = Math.min(R, row1 - i0);
      const block = f32.subarray(pOut >> 2, (pOut >> 2) + rows * n);
      if (fold) gather(out, block, i0, rows, n, m, transpose);
      fs.forEach((f, s) => {
        f32.set(f.B.subarray(i0 * r, (i0 + rows) * r), (pB + s * bBytes) >> 2);
        this.x.lora(s * aBytes, pB + s * bBytes, rows, r, n, f.scale, pOut, fold ? 1 : 0, pNks, pKoff, pBval, pAt, W);
      });
      scatter(block, out, i0, rows, n, m, transpose);
    }
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

/** Rows [row0, row1) of the LoRA delta into `out` (loraDeltaRows' result): in WebAssembly where it loads. */
export function loraRows(f: LoraFactors, row0: number, row1: number, out: Float32Array): void {
  const w = wasmLora();
  if (w) w.rows([f], row0, row1, out, false);
  else loraDeltaRows(f, row0, row1, out);
}
