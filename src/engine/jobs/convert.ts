/**
 * convert: a PyTorch pickle checkpoint -> safetensors, same names, dtypes, shapes and bytes. A single
 * `.bin` / `.pt` / `.pth` file becomes one `.safetensors` file; a folder becomes a folder: the model's
 * `pytorch_model.bin` -> `model.safetensors`, its shards -> the same shards as safetensors with
 * `model.safetensors.index.json`, a PEFT adapter's `adapter_model.bin` -> `adapter_model.safetensors`,
 * with the folder's configs, tokenizer and cards copied. Bytes are copied as stored, never decoded.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Checkpoint, closeCheckpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { weightsFormat } from '../../shared/weights/read';
import { LensError } from '../errors';
import { Scratch } from '../safetensors/reader';
import { TensorInfo } from '../../shared/safetensors/header';
import { SafetensorsWriter, writeFileAtomic } from '../safetensors/writer';
import { JobContext, throwIfCancelled } from '../util/job';
import { withOutputDir, withOutputFile } from '../util/outputDir';
import { blockInfo, blocksOf, prefetched, readBlock } from '../tensors/stream';
import { ConvertReport } from '../../shared/jobs/reports/convert';

/** Weights, their indexes and pickles: never copied beside the converted weights. */
const NOT_COPIED = /\.(safetensors|bin|pt|pth|ckpt|pkl)$|\.index\.json$/;

/** Rewrites the PyTorch pickles of `input` (a model or adapter folder, or one file) as safetensors in `out`. */
export interface ConvertOptions {
  input: string;
  out: string;
}

export async function convertJob(opts: ConvertOptions, ctx: JobContext): Promise<ConvertReport> {
  const { input: inPath, out } = opts;
  const t0 = performance.now();
  const c = openCheckpoint(inPath);
  try {
    // Adapters that are not PEFT's own formats went to convertAdapterJob (run/convert.ts); a PEFT folder in
    // safetensors is already what convert writes.
    if (!c.files.some((f) => weightsFormat(f) === 'pytorch')) {
      const what = c.kind === 'adapter' ? `is a PEFT ${c.adapter!.method} adapter folder in safetensors already` : 'holds no PyTorch pickle checkpoint to convert (its weights are already safetensors)';
      throw new LensError(inPath, `${what}: nothing to convert`);
    }
    const done = (files: string[], bytes: number): ConvertReport => ({
      in: inPath,
      out,
      kind: c.kind,
      files,
      tensors: c.tensors.length,
      bytes,
      seconds: (performance.now() - t0) / 1000,
    });
    if (fs.statSync(inPath).isFile()) {
      if (!out.endsWith('.safetensors')) throw new LensError(out, 'a single checkpoint file converts to one .safetensors file; give a name ending in .safetensors');
      // A converted file carries no mark of its own, so an existing file at --out is never replaced.
      return await withOutputFile(out, [inPath], () => false, 'a file', async () => done([out], await writeTensors(c, out, c.tensors, ctx)));
    }
    return await withOutputDir('convert', out, [inPath], async (dir) => {
      const groups = outputFiles(c);
      let bytes = 0;
      for (const [name, tensors] of groups) bytes += await writeTensors(c, dir.file(name), tensors, ctx, bytes);
      const files = [...groups.keys()];
      if (c.kind === 'sharded-model') {
        const weightMap: Record<string, string> = {};
        for (const [name, tensors] of groups) for (const t of tensors) weightMap[t.name] = name;
        const index = { metadata: { total_size: bytes }, weight_map: weightMap };
        writeFileAtomic(dir.file('model.safetensors.index.json'), JSON.stringify(index, null, 2) + '\n');
        files.push('model.safetensors.index.json');
      }
      // statSync follows links: a Hugging Face cache snapshot's files are links into its blobs/.
      for (const e of fs.readdirSync(c.dir)) {
        if (!NOT_COPIED.test(e) && !e.startsWith('.') && fs.statSync(path.join(c.dir, e)).isFile()) fs.copyFileSync(path.join(c.dir, e), dir.file(e));
      }
      return done(files, bytes);
    });
  } finally {
    closeCheckpoint(c);
  }
}

/** The safetensors files of a converted folder, each with its tensors: one per input file, named as Hugging Face and PEFT name them. */
function outputFiles(c: Checkpoint): Map<string, TensorInfo[]> {
  const byFile = new Map<string, TensorInfo[]>(c.files.map((f) => [f, []]));
  for (const t of c.tensors) byFile.get(t.file)!.push(t);
  const n = c.files.length;
  const pad = (i: number): string => String(i).padStart(5, '0');
  const name = (f: string, i: number): string => {
    if (c.kind === 'adapter') return 'adapter_model.safetensors';
    if (c.kind === 'sharded-model') return `model-${pad(i + 1)}-of-${pad(n)}.safetensors`;
    if (c.kind === 'model') return 'model.safetensors';
    return path.basename(f).replace(/\.[^.]*$/, '') + '.safetensors';
  };
  return new Map(c.files.map((f, i) => [name(f, i), byFile.get(f)!]));
}

/** Copies `tensors`' stored bytes into a new safetensors file, block by block; returns the bytes written. */
async function writeTensors(c: Checkpoint, file: string, tensors: TensorInfo[], ctx: JobContext, before = 0): Promise<number> {
  const writer = new SafetensorsWriter(file, tensors.map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape })), { format: 'pt' });
  const scratch = new Scratch();
  const steps = tensors.flatMap((t) => blocksOf(t));
  let bytes = 0;
  try {
    const read = (b: (typeof steps)[number], slot: 0 | 1): Promise<Uint8Array> => readBlock(c.handles, b, scratch.bytes(`raw${slot}`, blockInfo(b).byteLength));
    let done = 0;
    for await (const { step, data } of prefetched(steps, read)) {
      throwIfCancelled(ctx);
      await writer.writePartAsync(step.tensor.name, data);
      bytes += data.byteLength;
      if (step.last) done++;
      ctx.progress({ phase: 'convert', done, total: tensors.length, bytes: before + bytes, tensor: step.tensor.name });
    }
    await writer.finishAsync();
  } catch (e) {
    await writer.abortAsync();
    throw e;
  }
  return bytes;
}
