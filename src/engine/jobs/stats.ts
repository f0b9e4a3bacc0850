/**
 * stats: a look at one tensor's values, or at what changed in it (fine-tuned minus base, or the delta an
 * adapter adds in any format the engine reads): min, max, mean, std, non-finite counts, a histogram and
 * a heat map of |x| over at most grid × grid cells. The tensor is read block by block, twice (the range
 * first, then bins and deviations); no more than one block's values are held.
 */
import { AdaptedModule, needsBase, wholeTensor } from '../checkpoint/deltaRule';
import { Checkpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { LensError } from '../errors';
import { KernelContext, Kernels } from '../kernels/kernels';
import { bytesToF32, Scratch } from '../safetensors/reader';
import { isFloatDtype } from '../../shared/safetensors/dtypes';
import { TensorInfo } from '../../shared/safetensors/header';
import { JobContext, throwIfCancelled } from '../util/job';
import { effectiveDelta, Factors } from '../tensors/delta';
import { closePlan, planAdapter } from '../tensors/plan';
import { Block, blockInfo, blocksOf, BLOCK_ELEMENTS, readBlock, sameRows } from '../tensors/stream';
import { histogramEdges, matrixOf, RangePass, SpreadPass, statsSummary } from '../tensors/valueStats';
import type { StatsReport, StatsSource } from '../../shared/jobs/reports/stats';
export type { StatsReport };

export const DEFAULT_BINS = 128;
export const DEFAULT_GRID = 256;

export interface StatsOptions {
  tensor: string;
  /** The tensor's values; with `base`, model minus base. */
  model?: string;
  base?: string;
  /** With `base`: the delta this adapter adds to the base's tensor. */
  adapter?: string;
  bins?: number;
  grid?: number;
  /** Elements per block (tests cut small tensors into many blocks). */
  blockElements?: number;
}

/** The values of one tensor, block by block, from whichever source. */
interface Source {
  source: StatsSource;
  /** The tensor whose geometry the values have. */
  tensor: TensorInfo;
  dtype: string;
  transposed: boolean;
  blocks: Block[];
  values(b: Block): Promise<Float32Array>;
  close(): void;
}

function positiveInt(x: number | undefined, fallback: number, max: number, flag: string): number {
  if (x === undefined) return fallback;
  if (!Number.isInteger(x) || x < 1 || x > max) throw new LensError('lora-lens stats', `--${flag} must be a whole number from 1 to ${max} (got ${x})`);
  return x;
}

function floatTensor(c: Checkpoint, name: string): TensorInfo {
  const t = c.byName.get(name);
  if (!t) throw new LensError(c.path, `has no tensor named '${name}'`);
  if (!isFloatDtype(t.dtype)) throw new LensError(t.file, `is a ${t.dtype} tensor; statistics need floating-point values`, name);
  return t;
}

function readF32(c: Checkpoint, b: Block, scratch: Scratch, slot: string): Promise<Float32Array> {
  const info = blockInfo(b);
  return readBlock(c.handles, b, scratch.bytes(slot, info.byteLength)).then((raw) => bytesToF32(info, raw, scratch.f32(`${slot}-f32`, info.numel)));
}

function valuesSource(modelPath: string, name: string, blockElements: number, scratch: Scratch): Source {
  const model = openCheckpoint(modelPath);
  try {
    const t = floatTensor(model, name);
    return { source: 'values', tensor: t, dtype: t.dtype, transposed: false, blocks: blocksOf(t, blockElements), values: (b) => readF32(model, b, scratch, 'x'), close: () => model.handles.close() };
  } catch (e) {
    model.handles.close();
    throw e;
  }
}

function differenceSource(modelPath: string, basePath: string, name: string, blockElements: number, scratch: Scratch): Source {
  const model = openCheckpoint(modelPath);
  let base: Checkpoint | undefined;
  const close = (): void => {
    model.handles.close();
    base?.handles.close();
  };
  try {
    base = openCheckpoint(basePath);
    const t = floatTensor(model, name);
    const w = floatTensor(base, name);
    if (t.shape.join(',') !== w.shape.join(',')) throw new LensError(model.path, `shape [${t.shape}] differs from the base's [${w.shape}] (${base.path})`, name);
    const values = async (b: Block): Promise<Float32Array> => {
      const x = await readF32(model, b, scratch, 'x');
      const y = await readF32(base!, sameRows(b, w), scratch, 'w');
      // In fp32, as extract writes the task vector.
      const d = scratch.f32('d', b.numel);
      for (let i = 0; i < b.numel; i++) d[i] = x[i] - y[i];
      return d;
    };
    return { source: 'difference', tensor: t, dtype: t.dtype, transposed: false, blocks: blocksOf(t, blockElements), values, close };
  } catch (e) {
    close();
    throw e;
  }
}

/** The adapter module (or saved replacement) behind `name`: a base tensor, a module path, or one of the adapter's own tensors. */
function adapterSource(
  adapterPath: string,
  basePath: string,
  name: string,
  blockElements: number,
  scratch: Scratch,
  kernels: Kernels,
  ctx: JobContext,
): Source {
  const plan = planAdapter(basePath, adapterPath, ctx);
  try {
    const m: AdaptedModule | undefined =
      plan.loraByBase.get(name) ?? plan.modules.find((x) => x.module === name || x.module === name.replace(/\.weight$/, '') || x.tensors.some((t) => t.name === name));
    const base = (t: TensorInfo, b: Block): Promise<Float32Array> => readF32(plan.base, sameRows(b, t), scratch, 'w');
    if (m) {
      const t = m.base!;
      const factors = new Factors(plan.adapter, kernels.sharedMemory);
      const values = async (b: Block): Promise<Float32Array> => {
        const w = needsBase(m) ? await base(t, b) : undefined;
        return effectiveDelta(kernels, factors, m, b, w, scratch.f32('delta', b.numel), scratch);
      };
      const blocks = blocksOf(t, wholeTensor(m) ? Infinity : blockElements, true);
      return { source: 'adapter', tensor: t, dtype: 'F32', transposed: m.transpose, blocks, values, close: () => closePlan(plan) };
    }
    const rep = plan.replaceByBase.get(name) ?? [...plan.replaceByBase.values()].find((r) => r.source.name === name);
    if (rep) {
      const t = rep.base!;
      const values = async (b: Block): Promise<Float32Array> => {
        const x = await readF32(plan.adapter, sameRows(b, rep.source), scratch, 'x');
        const w = await base(t, b);
        const d = scratch.f32('d', b.numel);
        for (let i = 0; i < b.numel; i++) d[i] = x[i] - w[i];
        return d;
      };
      return { source: 'adapter', tensor: t, dtype: rep.source.dtype, transposed: false, blocks: blocksOf(t, blockElements), values, close: () => closePlan(plan) };
    }
    const why = plan.base.byName.has(name) ? 'does not adapt this tensor of the base (its ΔW is zero)' : 'has no module or tensor of that name, nor does the base';
    throw new LensError(plan.adapter.path, why, name);
  } catch (e) {
    closePlan(plan);
    throw e;
  }
}

/** Checks which of the three sources the options name. */
function sourceOf(opts: StatsOptions): StatsSource {
  const { model, base, adapter } = opts;
  if ((model === undefined) === (adapter === undefined)) throw new LensError('lora-lens stats', 'give exactly one of --model PATH (its values; with --base, model minus base) or --adapter DIR --base DIR (its delta)');
  if (adapter !== undefined && base === undefined) throw new LensError('lora-lens stats', "--adapter needs --base DIR: an adapter's delta is resolved against its base");
  return adapter !== undefined ? 'adapter' : base !== undefined ? 'difference' : 'values';
}

export async function statsJob(opts: StatsOptions, ctx: KernelContext): Promise<StatsReport> {
  const t0 = performance.now();
  const bins = positiveInt(opts.bins, DEFAULT_BINS, 4096, 'bins');
  const grid = positiveInt(opts.grid, DEFAULT_GRID, 1024, 'grid');
  const which = sourceOf(opts);
  const blockElements = opts.blockElements ?? BLOCK_ELEMENTS;
  // Only an adapter's delta needs the numeric backend (its products); the others are plain reads.
  const k = which === 'adapter' ? await ctx.kernels() : undefined;
  const scratch = new Scratch(k?.sharedMemory);
  const src =
    which === 'adapter'
      ? adapterSource(opts.adapter!, opts.base!, opts.tensor, blockElements, scratch, k!, ctx)
      : which === 'difference'
        ? differenceSource(opts.model!, opts.base!, opts.tensor, blockElements, scratch)
        : valuesSource(opts.model!, opts.tensor, blockElements, scratch);
  try {
    const total = 2 * src.blocks.length;
    let done = 0;
    // A tensor of one block (small, or a whole-tensor delta like DoRA's) keeps its values for the second
    // pass; larger ones are read (and their delta formed) again, to stream.
    let kept: Float32Array | undefined;
    const pass = async (phase: string, use: (x: Float32Array, b: Block) => void): Promise<void> => {
      for (const b of src.blocks) {
        throwIfCancelled(ctx);
        const x = kept ?? (await src.values(b));
        if (src.blocks.length === 1) kept = x;
        use(x, b);
        ctx.progress({ phase, done: ++done, total, tensor: src.tensor.name });
      }
    };
    const range = new RangePass(matrixOf(src.tensor.shape), grid);
    await pass('range', (x, b) => range.add(x, b.start));
    let spread: SpreadPass | undefined;
    if (range.finite > 0) {
      spread = new SpreadPass(histogramEdges(range.min, range.max, bins), range.mean!);
      await pass('histogram', (x) => spread!.add(x));
    }
    const summary = statsSummary(range, spread);
    const warnings: string[] = [];
    const bad = summary.nan + summary.posInf + summary.negInf;
    if (bad > 0) warnings.push(`${bad} of ${summary.elements} elements are NaN or infinite (${summary.nan} NaN, ${summary.posInf} +Inf, ${summary.negInf} −Inf): left out of every figure`);
    for (const w of warnings) ctx.warn(w);
    return {
      tensor: src.tensor.name,
      source: src.source,
      model: opts.model ?? null,
      base: opts.base ?? null,
      adapter: opts.adapter ?? null,
      dtype: src.dtype,
      shape: src.tensor.shape,
      transposed: src.transposed,
      summary,
      histogram: spread?.histogram() ?? null,
      heatmap: range.heatmap(),
      warnings,
      seconds: (performance.now() - t0) / 1000,
    };
  } finally {
    src.close();
  }
}
