/**
 * merge: base + adapter -> a Hugging Face model folder at fp32, fp16 or bf16, one row block at a time.
 * Adapted tensors: kernels.merge(W, ΔW) under the rule, ΔW from the module's delta rule (DoRA:
 * m / ||W + dW|| * (W + dW); IA³: W ⊙ l);
 * modules_to_save and saved biases replace the base's; every other float tensor is r_D(W).
 */
import { LensError } from '../errors';
import { KernelContext, Kernels, MergeDtype } from '../kernels/kernels';
import { MergeRule } from '../../shared/jobs/choices';
import { CLI_DTYPES, CliDtype, elementBytes, isFloatDtype } from '../../shared/safetensors/dtypes';
import { Scratch } from '../safetensors/reader';
import { TensorInfo } from '../../shared/safetensors/header';
import { TensorSpec } from '../safetensors/writer';
import { JobContext, throwIfCancelled } from '../util/job';
import { withOutputDir } from '../util/outputDir';
import { NonFiniteTally, nonFiniteEncoded } from '../tensors/finite';
import { deltaBlock, Factors, mergeDora, scaledBlock } from '../tensors/delta';
import { wholeTensor } from '../checkpoint/deltaRule';
import { copyModelFiles, modelWriter } from '../tensors/modelLayout';
import { AdapterPlan, closePlan, planAdapter } from '../tensors/plan';
import { Block, blockInfo, blocksOf, prefetched, readBlock } from '../tensors/stream';
import { MergeReport } from '../../shared/jobs/reports/merge';

/** Hugging Face's default shard size for save_pretrained (5 GB). */
export const DEFAULT_SHARD_BYTES = 5_000_000_000;

export interface MergeSettings {
  dtype: CliDtype;
  rule: MergeRule;
  shardSize?: number;
}

/** Merges `adapter` into `base`, written as the new model folder `out`. */
export interface MergeOptions extends MergeSettings {
  base: string;
  adapter: string;
  out: string;
}

/** `lora`: an additive delta rule; `dora` and `scale` (IA³) need the base weight beyond W + ΔW. */
type Action = 'lora' | 'dora' | 'scale' | 'replace' | 'cast' | 'copy';

interface Step {
  name: string;
  action: Action;
  /** The block read: of the base tensor, or of the adapter's replacement tensor. */
  block: Block;
  fromAdapter: boolean;
}

/** Merges into a new folder `out` (built aside, moved into place on success). */
export async function mergeJob(opts: MergeOptions, ctx: KernelContext): Promise<MergeReport> {
  const { base: basePath, adapter: adapterPath, out } = opts;
  const plan = planAdapter(basePath, adapterPath, ctx);
  try {
    // The backend (perhaps a GPU) starts once the inputs are known good.
    const kernels = await ctx.kernels();
    return await withOutputDir('merge', out, [basePath, adapterPath], async (dir) => ({ ...(await mergeInto(dir.tmp, plan, opts, kernels, ctx)), out }));
  } finally {
    closePlan(plan);
  }
}

/** Writes the merged weights, config and tokenizer files into the existing folder `dir`. */
export async function mergeInto(dir: string, plan: AdapterPlan, opts: MergeSettings, kernels: Kernels, ctx: JobContext): Promise<MergeReport> {
  const t0 = performance.now();
  const dtype: MergeDtype = CLI_DTYPES[opts.dtype];
  const shardSize = opts.shardSize ?? DEFAULT_SHARD_BYTES;
  if (!(shardSize > 0)) throw new LensError('--shard-size', `must be a positive number of bytes (got ${shardSize})`);

  const specs: TensorSpec[] = [];
  const steps: Step[] = [];
  const counts: Record<Action, number> = { lora: 0, dora: 0, scale: 0, replace: 0, cast: 0, copy: 0 };
  const add = (name: string, action: Action, t: TensorInfo, fromAdapter: boolean): void => {
    specs.push({ name, dtype: isFloatDtype(t.dtype) ? dtype : t.dtype, shape: t.shape });
    counts[action]++;
    for (const block of blocksOf(t, action === 'dora' ? Infinity : undefined, action === 'lora' || action === 'scale')) steps.push({ name, action, block, fromAdapter });
  };
  for (const t of plan.base.tensors) {
    const lora = plan.loraByBase.get(t.name);
    const rep = plan.replaceByBase.get(t.name);
    const override = plan.loraBaseOverride.get(t.name);
    const action: Action | undefined = lora && (lora.rule.kind === 'scale' ? 'scale' : wholeTensor(lora) ? 'dora' : 'lora');
    if (lora && override) add(t.name, action!, override, true);
    else if (lora) add(t.name, action!, t, false);
    else if (rep) add(t.name, 'replace', rep.source, true);
    // A float tensor already in the output dtype is r_D(W) = W: its bytes pass through unchanged.
    else add(t.name, !isFloatDtype(t.dtype) || t.dtype === dtype ? 'copy' : 'cast', t, false);
  }
  for (const rep of plan.added) add(rep.target, 'replace', rep.source, true);

  const writer = modelWriter(plan.base, dir, specs, shardSize);
  const scratch = new Scratch(kernels.sharedMemory);
  const factors = new Factors(plan.adapter, kernels.sharedMemory);
  const nonFinite = new NonFiniteTally();
  let bytesRead = 0;
  let bytesWritten = 0;
  let done = 0;
  const read = (s: Step, slot: 0 | 1): Promise<Uint8Array> => {
    const info = blockInfo(s.block);
    return readBlock(s.fromAdapter ? plan.adapter.handles : plan.base.handles, s.block, scratch.bytes(`raw${slot}`, info.byteLength));
  };
  try {
    for await (const { step, data: raw } of prefetched(steps, read)) {
      throwIfCancelled(ctx);
      const b = step.block;
      bytesRead += raw.byteLength;
      let bytes: Uint8Array;
      if (step.action === 'copy') bytes = raw;
      else {
        const w = await kernels.decode(blockInfo(b), raw, scratch.f32('w', b.numel));
        bytes = scratch.bytes('out', b.numel * elementBytes(dtype));
        if (step.action === 'scale') {
          // IA³: W ⊙ l as PEFT's merge forms it, then encoded like an untouched tensor.
          const m = plan.loraByBase.get(step.name)!;
          await kernels.merge(scaledBlock(m, factors, b, w, dtype, opts.rule, scratch.f32('scaled', b.numel)), null, dtype, opts.rule, bytes);
        } else if (step.action === 'lora' || step.action === 'dora') {
          const m = plan.loraByBase.get(step.name)!;
          const d = await deltaBlock(kernels, factors, m, b, scratch.f32('delta', b.numel), scratch);
          if (step.action === 'dora') await mergeDora(kernels, factors, m, w, d, dtype, opts.rule, bytes);
          else await kernels.merge(w, d, dtype, opts.rule, bytes);
        } else await kernels.merge(w, null, dtype, opts.rule, bytes);
      }
      // What the job computed (not bytes it passed through) is checked for NaN and Inf.
      if (step.action !== 'copy') nonFinite.add(step.name, nonFiniteEncoded(bytes, dtype));
      // Overlaps with the read of the next block, already in flight.
      await writer.writePartAsync(step.name, bytes);
      bytesWritten += bytes.byteLength;
      if (b.last) done++;
      ctx.progress({ phase: `merge ${opts.dtype}`, done, total: specs.length, bytes: bytesRead, tensor: step.name });
    }
    await writer.finishAsync();
  } catch (e) {
    await writer.abortAsync();
    throw e;
  }
  for (const c of copyModelFiles(plan.base, dir, opts.dtype)) ctx.warn(`${c}/: its weights are not safetensors; copied unchanged`);
  const nonFiniteWarning = nonFinite.warning(`the merged model (${opts.dtype})`);
  if (nonFiniteWarning) ctx.warn(nonFiniteWarning);
  return {
    base: plan.base.path,
    adapter: plan.adapter.path,
    out: dir,
    dtype: opts.dtype,
    rule: opts.rule,
    device: kernels.description,
    files: writer.fileNames,
    tensors: specs.length,
    loraTensors: counts.lora + counts.dora + counts.scale,
    doraTensors: counts.dora,
    replacedTensors: counts.replace - plan.added.length,
    addedTensors: plan.added.length,
    castTensors: counts.cast,
    copiedTensors: counts.copy,
    bytesRead,
    bytesWritten,
    seconds: (performance.now() - t0) / 1000,
    nonFinite: nonFinite.list,
    warnings: nonFiniteWarning ? [...plan.warnings, nonFiniteWarning] : plan.warnings,
  };
}
