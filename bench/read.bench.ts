/**
 * Raw tensor read throughput of the engine's reader against the floor: a plain sequential read of the
 * same file in large chunks. The file is a StarCoder2-3B-shaped model in bf16 with its true tensor
 * shapes and fewer layers (BENCH_READ_LAYERS, default 10: about 2.2 GB), written in os.tmpdir() and
 * removed after. Just written, it sits in the page cache: both reads measure the same memory path.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { closeCheckpoint, openCheckpoint } from '../src/engine/checkpoint/checkpoint';
import { Scratch } from '../src/engine/safetensors/reader';
import { STARCODER2_3B } from '../src/engine/synthetic/configs';
import { writeSyntheticModel } from '../src/engine/synthetic/model';

const LAYERS = Number(process.env.BENCH_READ_LAYERS ?? 10);
const CHUNK = 16 << 20;
const PASSES = 5;

function plainRead(file: string, chunk = CHUNK): number {
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.allocUnsafe(chunk);
  let total = 0;
  for (let n; (n = fs.readSync(fd, buf, 0, chunk, total)) > 0; ) total += n;
  fs.closeSync(fd);
  return total;
}

function engineSync(dir: string, scratch: Scratch): number {
  const c = openCheckpoint(dir);
  let total = 0;
  for (const t of c.tensors) total += c.handles.readBytesSync(t, scratch.bytes('raw', t.byteLength)).byteLength;
  closeCheckpoint(c);
  return total;
}

async function engineAsync(dir: string, scratch: Scratch): Promise<number> {
  const c = openCheckpoint(dir);
  let total = 0;
  for (const t of c.tensors) total += (await c.handles.readBytes(t, scratch.bytes('raw', t.byteLength))).byteLength;
  closeCheckpoint(c);
  return total;
}

async function timed(f: () => number | Promise<number>): Promise<{ s: number; bytes: number }> {
  const t = performance.now();
  const bytes = await f();
  return { s: (performance.now() - t) / 1000, bytes };
}

async function main(): Promise<void> {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'lora-lens-bench-read-'));
  try {
    const t0 = performance.now();
    const model = writeSyntheticModel(path.join(root, 'm'), { ...STARCODER2_3B, num_hidden_layers: LAYERS }, { dtype: 'BF16' });
    const file = model.files[0];
    const size = fs.statSync(file).size;
    console.log(`wrote ${(size / 1e9).toFixed(2)} GB (${model.tensors.length} tensors, ${LAYERS} layers) in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const scratch = new Scratch();
    // The same plain read into a buffer as large as the largest tensor: what the destination's size alone costs.
    const largest = Math.max(...model.tensors.map((t) => t.shape.reduce((a, b) => a * b, 1) * 2));
    const best: Record<string, number> = { plain: Infinity, plainLarge: Infinity, engineSync: Infinity, engineAsync: Infinity };
    // Per pass, each method's time over the floor's in the same pass: robust to load from other processes.
    const ratios: Record<string, number[]> = { plainLarge: [], engineSync: [], engineAsync: [] };
    let last = 0;
    for (let pass = 0; pass < PASSES; pass++) {
      // Alternate so that page-cache state and machine load hit every method alike.
      for (const [name, f] of [
        ['plain', () => plainRead(file)],
        ['plainLarge', () => plainRead(file, largest)],
        ['engineSync', () => engineSync(model.dir, scratch)],
        ['engineAsync', () => engineAsync(model.dir, scratch)],
      ] as Array<[string, () => number | Promise<number>]>) {
        const r = await timed(f);
        const expected = name.startsWith('plain') ? size : model.dataBytes;
        if (r.bytes !== expected) throw new Error(`${name} read ${r.bytes} bytes, expected ${expected}`);
        best[name] = Math.min(best[name], r.s);
        if (name !== 'plain') ratios[name].push(r.s / last);
        else last = r.s;
      }
    }
    const gbps = (bytes: number, s: number): string => `${(bytes / s / 1e9).toFixed(2)} GB/s`;
    console.log(`plain sequential read (floor, ${CHUNK >> 20} MiB chunks): ${gbps(size, best.plain)}`);
    const label: Record<string, string> = {
      plainLarge: `plain sequential read, ${(largest / 2 ** 20).toFixed(0)} MiB chunks (the largest tensor)`,
      engineSync: 'engine reader, readBytesSync per tensor',
      engineAsync: 'engine reader, readBytes (async) per tensor',
    };
    for (const name of ['plainLarge', 'engineSync', 'engineAsync']) {
      const r = ratios[name].sort((a, b) => a - b);
      console.log(
        `${label[name]}: ${gbps(name === 'plainLarge' ? size : model.dataBytes, best[name])}, ` +
          `${(best[name] / best.plain).toFixed(2)}x the floor's best time; per pass median ${r[r.length >> 1].toFixed(2)}x (range ${r[0].toFixed(2)}-${r[r.length - 1].toFixed(2)})`,
      );
    }
    console.log(`(best of ${PASSES} passes each, page cache warm)`);
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

void main();
