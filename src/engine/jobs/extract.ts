/**
 * extract: the task vector tau = f32(finetuned) - f32(base), per tensor, written as one fp32
 * safetensors file that openCheckpoint recognises as a task vector.
 */
import { Checkpoint, openCheckpoint, TASK_VECTOR_KIND } from '../checkpoint/checkpoint';
import { LensError } from '../errors';
import { KernelContext, Kernels, PairStats } from '../kernels/kernels';
import { FloatDtype } from '../../shared/safetensors/dtypes';
import { Scratch } from '../safetensors/reader';
import { readHeader } from '../../shared/safetensors/file';
import { SafetensorsWriter } from '../safetensors/writer';
import { withOutputFile } from '../util/outputDir';
import { NonFiniteTally } from '../tensors/finite';
import { JobContext, throwIfCancelled } from '../util/job';
import { Accumulator, zeroStats } from '../tensors/stats';
import { pairingProblems, pairTensors } from '../tensors/pairing';
import { blockInfo, blocksOf, prefetched, readBlock, sameBytes, sameRows } from '../tensors/stream';
import { ExtractTensor, ExtractReport } from '../../shared/jobs/reports/extract';

/** The task vector `finetuned - base`, written to `out` (one .safetensors file). */
export interface ExtractOptions {
  base: string;
  finetuned: string;
  out: string;
}

/** Opens both models and writes the task vector. */
export async function extractJob(opts: ExtractOptions, ctx: KernelContext): Promise<ExtractReport> {
  const { base: basePath, finetuned: finetunedPath, out: outFile } = opts;
  if (!outFile.endsWith('.safetensors')) throw new LensError(outFile, 'the task vector is written as one .safetensors file; give a name ending in .safetensors');
  return withOutputFile(outFile, [basePath, finetunedPath], isTaskVectorFile, 'a task vector', async () => {
    const base = openCheckpoint(basePath);
    const ft = openCheckpoint(finetunedPath);
    try {
      return await extractInto(base, ft, outFile, await ctx.kernels(), ctx);
    } finally {
      base.handles.close();
      ft.handles.close();
    }
  });
}

/** A task vector an earlier extract wrote (which a new one may replace). */
function isTaskVectorFile(file: string): boolean {
  try {
    return readHeader(file).metadata.lora_lens === TASK_VECTOR_KIND;
  } catch {
    return false;
  }
}

/** Writes the task vector of `ft` against `base` to `outFile` (atomically). */
export async function extractInto(base: Checkpoint, ft: Checkpoint, outFile: string, kernels: Kernels, ctx: JobContext): Promise<ExtractReport> {
  const t0 = performance.now();
  for (const c of [base, ft]) if (c.kind === 'adapter') throw new LensError(c.path, 'this is a PEFT adapter folder; extract takes two full models');
  const pairing = pairTensors(base, ft);
  const warnings: string[] = [];
  const problems = pairingProblems(pairing, 'finetuned model');
  if (problems) {
    warnings.push(problems);
    ctx.warn(problems);
  }
  if (pairing.pairs.length === 0) throw new LensError(ft.path, `shares no float tensor (same name and shape) with the base ${base.path}`);

  const steps = pairing.pairs.flatMap((p) => blocksOf(p.base).map((block) => ({ pair: p, block })));
  const scratch = new Scratch(kernels.sharedMemory);
  const writer = new SafetensorsWriter(
    outFile,
    pairing.pairs.map((p) => ({ name: p.name, dtype: 'F32', shape: p.base.shape })),
    { format: 'pt', lora_lens: TASK_VECTOR_KIND },
  );
  const tensors: ExtractTensor[] = [];
  let acc = new Accumulator();
  let bytes = 0;
  try {
    const read = async (s: (typeof steps)[number], slot: 0 | 1): Promise<[Uint8Array, Uint8Array]> => {
      const fb = sameRows(s.block, s.pair.other);
      return Promise.all([
        readBlock(base.handles, s.block, scratch.bytes(`base${slot}`, blockInfo(s.block).byteLength)),
        readBlock(ft.handles, fb, scratch.bytes(`ft${slot}`, blockInfo(fb).byteLength)),
      ]);
    };
    for await (const { step, data: [rb, rf] } of prefetched(steps, read)) {
      throwIfCancelled(ctx);
      const b = step.block;
      const fi = blockInfo(sameRows(b, step.pair.other));
      if (fi.dtype === b.tensor.dtype && sameBytes(rb, rf) && (await kernels.allFinite(fi.dtype as FloatDtype, rb))) {
        // f - w of identical finite values is +0: the zeros are left as a hole of the new file.
        acc.add(zeroStats(b.numel));
        writer.skipZeros(step.pair.name, b.numel * 4);
      } else {
        const w = await kernels.decode(blockInfo(b), rb, scratch.f32('base', b.numel));
        const f = await kernels.decode(fi, rf, scratch.f32('ft', b.numel));
        const tau = await kernels.subtract(f, w, scratch.f32('tau', b.numel));
        acc.add(await kernels.pairStats(tau, null));
        // Overlaps with the read of the next block, already in flight.
        await writer.writePartAsync(step.pair.name, new Uint8Array(tau.buffer, tau.byteOffset, tau.byteLength));
      }
      bytes += rb.byteLength + rf.byteLength;
      if (b.last) {
        tensors.push(extractTensor(step.pair.name, b.tensor.shape, acc.stats));
        acc = new Accumulator();
      }
      ctx.progress({ phase: 'extract', done: tensors.length, total: pairing.pairs.length, bytes, tensor: step.pair.name });
    }
    await writer.finishAsync();
  } catch (e) {
    await writer.abortAsync();
    throw e;
  }
  const nonzero = tensors.filter((t) => t.nonzeroElements > 0);
  const tally = new NonFiniteTally();
  for (const t of tensors) tally.add(t.name, t.nonFinite);
  const nonFinite = tally.list;
  const nonFiniteWarning = tally.warning('the task vector');
  if (nonFiniteWarning) ctx.warn(nonFiniteWarning);
  return {
    base: base.path,
    finetuned: ft.path,
    out: outFile,
    device: kernels.description,
    summary: {
      tensors: tensors.length,
      nonzeroTensors: nonzero.length,
      zeroTensors: tensors.length - nonzero.length,
      elements: tensors.reduce((a, t) => a + shapeNumel(t.shape), 0),
      nonzeroElements: tensors.reduce((a, t) => a + t.nonzeroElements, 0),
      l2Norm: Math.sqrt(tensors.reduce((a, t) => a + t.l2Norm * t.l2Norm, 0)),
      nonFiniteTensors: nonFinite.length,
      bytes,
    },
    tensors,
    onlyInBase: pairing.onlyInBase,
    onlyInFinetuned: pairing.onlyInOther,
    shapeMismatches: pairing.shapeMismatches,
    nonFloat: pairing.nonFloat,
    nonFinite,
    warnings,
    seconds: (performance.now() - t0) / 1000,
  };
}

function shapeNumel(shape: number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

function extractTensor(name: string, shape: number[], s: PairStats): ExtractTensor {
  return { name, shape, nonzeroElements: s.aNonzero, l2Norm: Math.sqrt(s.aSq), maxAbs: s.maxAbsA, nonFinite: s.nonFinite };
}
