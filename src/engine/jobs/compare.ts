/**
 * compare: the adapter's deltas (s * B @ A per target, DoRA's effective delta, full replacements minus
 * the base) against a task vector, read from a file or computed on the fly as finetuned - base.
 */
import * as path from 'node:path';
import { classifyTensor } from '../../shared/census/classify';
import { Checkpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { assertTaskVector } from '../checkpoint/taskVector';
import { LensError } from '../errors';
import { KernelContext, Kernels, PairStats } from '../kernels/kernels';
import { FloatDtype, isFloatDtype } from '../../shared/safetensors/dtypes';
import { allZeroBytes } from '../kernels/cpuMath';
import { AdaptedModule, needsBase, wholeTensor } from '../checkpoint/deltaRule';
import { zeroFactorModules, zeroFactorWarning } from '../checkpoint/adapter';
import { Scratch } from '../safetensors/reader';
import { TensorInfo } from '../../shared/safetensors/header';
import { SafetensorsWriter, writeFileAtomic } from '../safetensors/writer';
import { JobContext, throwIfCancelled } from '../util/job';
import { withOutputDir } from '../util/outputDir';
import { effectiveDelta, Factors } from '../tensors/delta';
import { AdapterPlan, closePlan, planAdapter } from '../tensors/plan';
import { isHalf, outsideRounding } from './rounding';
import { Accumulator, cosine, relFroErr, swapSides, zeroStats } from '../tensors/stats';
import { finiteSumSq, NonFiniteTally } from '../tensors/finite';
import { Block, blockInfo, blocksOf, prefetched, readBlock, sameBytes, sameRows } from '../tensors/stream';
import { CompareTensor, CompareSummary, CompareReport } from '../../shared/jobs/reports/compare';

/**
 * Each side's norm and NaN/Inf count over a tensor's blocks. Pair statistics skip an element where
 * EITHER side is not finite, so in a block that met one, each side is summed again on its own: a
 * finite side keeps its exact norm, a side holding NaN or Inf has no norm (null), never a finite one.
 */
class Sides {
  loraSq = 0;
  tvSq = 0;
  loraNonFinite = 0;
  tvNonFinite = 0;

  add(s: PairStats, lora: Float32Array | null, tau: Float32Array | null): void {
    if (s.nonFinite === 0) {
      this.loraSq += s.aSq;
      this.tvSq += s.bSq;
      return;
    }
    if (lora) {
      const f = finiteSumSq(lora);
      this.loraSq += f.sumSq;
      this.loraNonFinite += f.nonFinite;
    }
    if (tau) {
      const f = finiteSumSq(tau);
      this.tvSq += f.sumSq;
      this.tvNonFinite += f.nonFinite;
    }
  }
}

/** Cosine above which a shared tensor counts as a perfect match. */
export const PERFECT_COSINE = 0.9999;

export interface CompareSettings {
  tolerance: number;
  saveDeltas: boolean;
}

interface Step {
  t: TensorInfo;
  block: Block;
  /** What must be read for this block. */
  needBase: boolean;
  other?: TensorInfo;
  rep?: TensorInfo;
}

/** Compares `adapter`'s deltas on `base` with exactly one of a `finetuned` model or a `taskVector` file; writes into `out`. */
export interface CompareOptions extends CompareSettings {
  base: string;
  adapter: string;
  finetuned?: string;
  taskVector?: string;
  out: string;
}

/** Opens everything, compares, and writes comparison_results.json, report.txt (and lora_deltas.safetensors) into `out`. */
export async function compareJob(opts: CompareOptions, ctx: KernelContext): Promise<CompareReport> {
  const { base: basePath, adapter: adapterPath, out } = opts;
  const otherPath = opts.taskVector ?? opts.finetuned;
  if (otherPath === undefined || (opts.taskVector !== undefined && opts.finetuned !== undefined)) {
    throw new LensError('lora-lens compare', 'give exactly one of --finetuned DIR or --task-vector FILE');
  }
  const plan = planAdapter(basePath, adapterPath, ctx);
  try {
    const other = openCheckpoint(otherPath);
    try {
      if (opts.taskVector !== undefined && other.kind !== 'task-vector' && other.kind !== 'file') {
        throw new LensError(otherPath, `is a ${other.kind}, not a task vector file; use --finetuned for a model folder`);
      }
      if (other.kind === 'adapter') throw new LensError(otherPath, 'is a PEFT adapter folder; --finetuned needs a full model');
      if (opts.taskVector !== undefined) assertTaskVector(plan.base, other, otherPath);
      const kernels = await ctx.kernels();
      return await withOutputDir('compare', out, [basePath, adapterPath, otherPath], (dir) =>
        compareInto(dir.tmp, plan, other, opts.taskVector !== undefined ? 'task-vector' : 'finetuned', opts, kernels, ctx),
      );
    } finally {
      other.handles.close();
    }
  } finally {
    closePlan(plan);
  }
}

/** Compares and writes the report files into the existing folder `dir`. */
export async function compareInto(dir: string, plan: AdapterPlan, other: Checkpoint, mode: 'task-vector' | 'finetuned', opts: CompareSettings, kernels: Kernels, ctx: JobContext): Promise<CompareReport> {
  const t0 = performance.now();
  const missing: string[] = [];
  const mismatched: string[] = [];
  const steps: Step[] = [];
  const deltaSpecs: { name: string; dtype: 'F32'; shape: number[] }[] = [];
  let total = 0;
  for (const t of plan.base.tensors) {
    if (!isFloatDtype(t.dtype)) continue;
    let o = other.byName.get(t.name);
    if (o && o.shape.join(',') !== t.shape.join(',')) {
      mismatched.push(t.name);
      continue;
    }
    if (o && !isFloatDtype(o.dtype)) o = undefined;
    if (!o) missing.push(t.name);
    const m = plan.loraByBase.get(t.name);
    const rep = plan.replaceByBase.get(t.name)?.source;
    if (!m && !rep && !o) continue;
    if (m || rep) deltaSpecs.push({ name: t.name, dtype: 'F32', shape: t.shape });
    total++;
    // The base is read where a side needs it: tau = ft - base, DoRA's norms, IA³'s scaling, a replacement's change.
    const needBase = (mode === 'finetuned' && o !== undefined) || (m !== undefined && needsBase(m)) || rep !== undefined;
    for (const block of blocksOf(t, m && wholeTensor(m) ? Infinity : undefined, m !== undefined)) steps.push({ t, block, needBase, other: o, rep });
  }
  const onlyInTaskVector = other.tensors.filter((t) => !plan.base.byName.has(t.name)).map((t) => t.name);
  const warnings = [...plan.warnings];
  // Named, not silently dropped: a module whose lora_B is all zeros has no tensor entry below.
  const zeroModules = zeroFactorModules(plan.adapter, plan.modules);
  const zeroWarning = zeroFactorWarning(zeroModules);
  if (zeroWarning) warnings.push(zeroWarning);
  if (mismatched.length) warnings.push(`${mismatched.length} tensor(s) have another shape in ${other.path} and were skipped: ${mismatched.slice(0, 3).join(', ')}`);
  if (onlyInTaskVector.length) warnings.push(`${onlyInTaskVector.length} tensor(s) of ${other.path} are not in the base, e.g. ${onlyInTaskVector[0]}`);
  const missingTargets = missing.filter((n) => plan.loraByBase.has(n) || plan.replaceByBase.has(n));
  if (missingTargets.length) warnings.push(`${missingTargets.length} adapted tensor(s) are missing from ${other.path} (compared against zeros), e.g. ${missingTargets[0]}`);
  for (const w of warnings.slice(plan.warnings.length)) ctx.warn(w);

  const scratch = new Scratch(kernels.sharedMemory);
  const factors = new Factors(plan.adapter, kernels.sharedMemory);
  const deltaWriter = opts.saveDeltas ? new SafetensorsWriter(path.join(dir, 'lora_deltas.safetensors'), deltaSpecs, { format: 'pt' }) : undefined;
  const tensors: CompareTensor[] = [];
  let acc = new Accumulator();
  let sides = new Sides();
  // One tally per side: which tensors hold NaN or Inf, and how many elements.
  const loraBad = new NonFiniteTally();
  const tvBad = new NonFiniteTally();
  /** Elements of the current tensor outside its dtype's rounding (half-precision finetuned tensors). */
  let outside = 0;
  let done = 0;
  const read = async (s: Step, slot: 0 | 1): Promise<{ base?: Uint8Array; other?: Uint8Array; rep?: Uint8Array }> => {
    const get = async (c: Checkpoint, b: Block, key: string): Promise<Uint8Array> => readBlock(c.handles, b, scratch.bytes(`${key}${slot}`, blockInfo(b).byteLength));
    const [base, o, rep] = await Promise.all([
      s.needBase ? get(plan.base, s.block, 'base') : undefined,
      s.other ? get(other, sameRows(s.block, s.other), 'other') : undefined,
      s.rep ? get(plan.adapter, sameRows(s.block, s.rep), 'rep') : undefined,
    ]);
    return { base, other: o, rep };
  };
  const finishTensor = (step: Step, m: AdaptedModule | undefined): void => {
    if (step.block.last) {
      done++;
      const entry = compareTensor(step.t.name, m !== undefined, step.rep !== undefined, acc.stats, sides, opts.tolerance);
      loraBad.add(entry.name, entry.loraNonFinite);
      tvBad.add(entry.name, entry.taskVectorNonFinite);
      if (mode === 'finetuned') {
        const half = step.other !== undefined && isHalf(step.other.dtype);
        entry.withinRounding = half ? outside === 0 && step.other !== undefined : entry.loraNonzero > 0 ? entry.withinTolerance : null;
      }
      if (entry.loraNonzero > 0 || entry.taskVectorNonzero > 0) tensors.push(entry);
      acc = new Accumulator();
      sides = new Sides();
      outside = 0;
    }
    ctx.progress({ phase: 'compare', done, total, tensor: step.t.name });
  };
  try {
    for await (const { step, data } of prefetched(steps, read)) {
      throwIfCancelled(ctx);
      const b = step.block;
      const n = b.numel;
      const m = plan.loraByBase.get(step.t.name);
      if (!m && !data.rep && data.other && (await zeroTaskVector(kernels, mode, b, step.other!, data.base, data.other))) {
        acc.add(zeroStats(n));
        finishTensor(step, m);
        continue;
      }
      const w = data.base ? await kernels.decode(blockInfo(b), data.base, scratch.f32('w', n)) : undefined;
      let tau: Float32Array | null = null;
      if (data.other) {
        const o = await kernels.decode(blockInfo(sameRows(b, step.other!)), data.other, scratch.f32('o', n));
        tau = mode === 'finetuned' ? await kernels.subtract(o, w!, scratch.f32('tau', n)) : o;
      }
      let lora: Float32Array | null = null;
      if (m) {
        // DoRA's and IA³'s delta is what their merge adds: the fp32 merge minus the base.
        lora = await effectiveDelta(kernels, factors, m, b, w, scratch.f32('delta', n), scratch);
      } else if (data.rep) {
        const r = await kernels.decode(blockInfo(sameRows(b, step.rep!)), data.rep, scratch.f32('rep', n));
        lora = await kernels.subtract(r, w!, scratch.f32('delta', n));
      }
      if (tau && w && mode === 'finetuned' && isHalf(step.other!.dtype)) outside += outsideRounding(step.other!.dtype as FloatDtype, w, lora, tau, opts.tolerance);
      const stats = lora ? await kernels.pairStats(lora, tau) : tau ? swapSides(await kernels.pairStats(tau, null)) : undefined;
      if (stats) {
        acc.add(stats);
        sides.add(stats, lora, tau);
      }
      if (deltaWriter && lora) deltaWriter.writePart(step.t.name, new Uint8Array(lora.buffer, lora.byteOffset, lora.byteLength));
      finishTensor(step, m);
    }
    deltaWriter?.finish();
  } catch (e) {
    deltaWriter?.abort();
    throw e;
  }
  for (const [tally, what] of [[loraBad, "the adapter's deltas"], [tvBad, mode === 'finetuned' ? 'the task vector (finetuned minus base)' : 'the task vector file']] as const) {
    const w = tally.warning(what);
    if (w) {
      warnings.push(`${w}: no norm, cosine or max abs diff for such tensors`);
      ctx.warn(warnings[warnings.length - 1]);
    }
  }
  const summary = summarise(tensors, opts.tolerance, mode === 'finetuned' ? storedDtype(plan.base, other) : null);
  const files = ['comparison_results.json', 'report.txt', ...(deltaWriter ? ['lora_deltas.safetensors'] : [])];
  const report: CompareReport = {
    base: plan.base.path,
    adapter: plan.adapter.path,
    taskVector: other.path,
    source: mode,
    device: kernels.description,
    summary,
    tensors,
    missingInTaskVector: missing,
    shapeMismatches: mismatched,
    onlyInTaskVector,
    zeroModules,
    nonFinite: tensors
      .filter((t) => t.loraNonFinite + t.taskVectorNonFinite > 0)
      .map((t) => ({ name: t.name, elements: t.loraNonFinite + t.taskVectorNonFinite })),
    files,
    warnings,
    seconds: (performance.now() - t0) / 1000,
  };
  writeFileAtomic(path.join(dir, 'comparison_results.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileAtomic(path.join(dir, 'report.txt'), compareText(report));
  return report;
}

/**
 * Whether a block's task vector is zero without decoding it: a task vector file's block of all-zero
 * bytes (+0 only), or a finetuned block bitwise equal to the base's with finite values (x - x = +0).
 */
async function zeroTaskVector(kernels: Kernels, mode: 'task-vector' | 'finetuned', b: Block, other: TensorInfo, base: Uint8Array | undefined, o: Uint8Array): Promise<boolean> {
  if (mode === 'task-vector') return allZeroBytes(o);
  return base !== undefined && other.dtype === b.tensor.dtype && sameBytes(base, o) && kernels.allFinite(other.dtype as FloatDtype, o);
}

function compareTensor(name: string, loraTarget: boolean, replaced: boolean, s: PairStats, sides: Sides, tolerance: number): CompareTensor {
  const maxAbsDiff = s.nonFinite > 0 ? null : s.maxAbsDiff;
  return {
    name,
    category: classifyTensor(name).category,
    loraTarget,
    replaced,
    cosine: cosine(s),
    maxAbsDiff,
    relFroErr: relFroErr(s),
    loraNorm: sides.loraNonFinite > 0 ? null : Math.sqrt(sides.loraSq),
    taskVectorNorm: sides.tvNonFinite > 0 ? null : Math.sqrt(sides.tvSq),
    loraNonFinite: sides.loraNonFinite,
    taskVectorNonFinite: sides.tvNonFinite,
    loraNonzero: s.aNonzero,
    taskVectorNonzero: s.bNonzero,
    withinTolerance: maxAbsDiff !== null && maxAbsDiff <= tolerance,
    withinRounding: null,
  };
}

const DTYPE_NAMES: Record<string, string> = { F64: 'fp64', F32: 'fp32', F16: 'fp16', BF16: 'bf16' };

/** The float dtype the finetuned model stores the base's tensors in, or `mixed`. */
function storedDtype(base: Checkpoint, other: Checkpoint): string | null {
  const seen = new Set<string>();
  for (const t of other.tensors) if (base.byName.has(t.name) && isFloatDtype(t.dtype)) seen.add(DTYPE_NAMES[t.dtype]);
  return seen.size === 0 ? null : seen.size === 1 ? [...seen][0] : 'mixed';
}

function summarise(tensors: CompareTensor[], tolerance: number, mergedDtype: string | null): CompareSummary {
  const shared = tensors.filter((t) => t.loraNonzero > 0 && t.taskVectorNonzero > 0);
  const loraOnly = tensors.filter((t) => t.loraNonzero > 0 && t.taskVectorNonzero === 0);
  const tvOnly = tensors.filter((t) => t.loraNonzero === 0 && t.taskVectorNonzero > 0);
  const cosines = shared.map((t) => t.cosine).filter((c): c is number => c !== null);
  const nonFinite = tensors.filter((t) => t.loraNonFinite + t.taskVectorNonFinite > 0);
  const adapted = [...shared, ...loraOnly];
  // reduce, not Math.max(...xs): there may be more tensors than a call takes arguments.
  const maxOf = (xs: (number | null)[]): number | null =>
    xs.length === 0 || xs.some((x) => x === null) ? null : (xs as number[]).reduce((a, x) => Math.max(a, x), -Infinity);
  // Every tensor the adapter changes must be within tolerance of the task vector (a delta the task vector
  // lacks is a failure too); an adapter that changes nothing is equivalent to a task vector that is zero
  // on its targets, and the verdict says so.
  const equivalent = adapted.every((t) => t.withinTolerance);
  const halfMerge = mergedDtype === 'fp16' || mergedDtype === 'bf16' || mergedDtype === 'mixed';
  const outsideRounding = halfMerge ? tensors.filter((t) => t.withinRounding === false).length : adapted.filter((t) => !t.withinTolerance).length;
  const withinRounding = halfMerge ? outsideRounding === 0 : equivalent;
  const s: CompareSummary = {
    compared: tensors.length,
    shared: shared.length,
    perfectMatches: shared.filter((t) => t.cosine !== null && t.cosine > PERFECT_COSINE).length,
    loraOnly: loraOnly.length,
    taskVectorOnly: tvOnly.length,
    taskVectorOnlyNorm: tvOnly.some((t) => t.taskVectorNorm === null) ? null : Math.sqrt(tvOnly.reduce((a, t) => a + t.taskVectorNorm! ** 2, 0)),
    meanCosine: cosines.length ? cosines.reduce((a, c) => a + c, 0) / cosines.length : null,
    minCosine: cosines.length ? cosines.reduce((a, c) => Math.min(a, c), Infinity) : null,
    cosineTensors: cosines.length,
    nonFiniteTensors: nonFinite.length,
    nonFiniteElements: nonFinite.reduce((a, t) => a + t.loraNonFinite + t.taskVectorNonFinite, 0),
    maxAbsDiff: maxOf(adapted.map((t) => t.maxAbsDiff)),
    maxRelFroErr: maxOf(shared.map((t) => t.relFroErr)),
    tolerance,
    equivalent,
    mergedDtype,
    withinRounding,
    outsideRoundingTensors: outsideRounding,
    dtypeVerdict: equivalent && withinRounding ? 'EQUIVALENT' : withinRounding ? 'EXPECTED-LOSS' : 'NOT-EQUIVALENT',
    verdict: '',
  };
  s.verdict = verdict(s);
  return s;
}

function fmt(x: number | null, digits = 3): string {
  return x === null ? 'n/a' : x === 0 ? '0' : Math.abs(x) < 1e-3 || Math.abs(x) >= 1e4 ? x.toExponential(digits - 1) : x.toPrecision(digits + 1);
}

function verdict(s: CompareSummary): string {
  const adapted = s.shared + s.loraOnly;
  const lines: string[] = [];
  const d = s.mergedDtype;
  if (s.dtypeVerdict === 'EXPECTED-LOSS') {
    lines.push(`EXPECTED LOSS at ${d}: every tensor the merged model changes is base + adapter rounded to ${d} (within the rounding any merge rule makes, plus ${fmt(s.tolerance)}); the strict check below fails only by that rounding.`);
  } else if (s.dtypeVerdict === 'NOT-EQUIVALENT' && d !== null && d !== 'fp32' && d !== 'fp64') {
    lines.push(`NOT EQUIVALENT even allowing for ${d} rounding: ${s.outsideRoundingTensors} tensor(s) differ from base + adapter by more than the rounding to ${d}.`);
  }
  if (s.nonFiniteTensors > 0) {
    lines.push(
      `${s.nonFiniteTensors} tensor(s) hold NaN or Inf (${s.nonFiniteElements} elements, listed under nonFinite): they have no cosine, norm or max abs diff, ` +
        `are never within tolerance, and the mean cosine is over the other ${s.cosineTensors} shared tensor(s) only.`,
    );
  }
  const strict = lines.length > 0 ? 'Strict check: ' : '';
  if (adapted === 0) {
    lines.push('EQUIVALENT, VACUOUSLY: the adapter changes no tensor (all its deltas are zero, as PEFT initialises lora_B), so no shared tensor can differ; what the task vector changes is counted below as outside the adapter.');
  } else if (s.equivalent) {
    lines.push(`${strict}EQUIVALENT: all ${adapted} tensors the adapter changes match the task vector within ${fmt(s.tolerance)} (max abs diff ${fmt(s.maxAbsDiff)}, mean cosine ${fmt(s.meanCosine, 6)}).`);
  } else {
    const bad = s.loraOnly > 0 ? `; ${s.loraOnly} adapted tensor(s) are unchanged in the task vector` : '';
    lines.push(`${strict}NOT EQUIVALENT: the max abs diff over adapted tensors is ${fmt(s.maxAbsDiff)} > tolerance ${fmt(s.tolerance)}${bad} (${s.perfectMatches} of ${s.shared} shared tensors have cosine > ${PERFECT_COSINE}, min cosine ${fmt(s.minCosine, 6)}).`);
  }
  if (s.taskVectorOnly > 0) {
    lines.push(
      `${s.taskVectorOnly} tensor(s) changed outside the adapter (norm ${fmt(s.taskVectorOnlyNorm)}): ` +
        `a checkpoint saved in fp16/bf16 against an fp32 base changes every tensor by its rounding; otherwise these were trained outside LoRA.`,
    );
  }
  return lines.join('\n');
}

/** The readable report: verdict first, then the tensors that matter most. */
export function compareText(r: CompareReport): string {
  const s = r.summary;
  const out = [
    'LoRA Lens: adapter deltas vs task vector',
    `base:        ${r.base}`,
    `adapter:     ${r.adapter}`,
    `${r.source === 'finetuned' ? 'finetuned:  ' : 'task vector:'} ${r.taskVector}`,
    `numerics:    ${r.device}`,
    ...(s.mergedDtype !== null ? [`merged dtype: ${s.mergedDtype}`] : []),
    '',
    s.verdict,
    '',
    `tensors compared (non-zero on either side): ${s.compared}`,
    `  shared (non-zero on both sides):     ${s.shared}`,
    `  perfect matches (cosine > ${PERFECT_COSINE}):  ${s.perfectMatches}`,
    `  adapter only:                        ${s.loraOnly}`,
    `  task vector only:                    ${s.taskVectorOnly} (norm ${fmt(s.taskVectorOnlyNorm)})`,
    ...(s.nonFiniteTensors > 0 ? [`  holding NaN or Inf:                  ${s.nonFiniteTensors} (${s.nonFiniteElements} elements)`] : []),
    `mean cosine ${fmt(s.meanCosine, 6)} (over ${s.cosineTensors} shared tensors), min cosine ${fmt(s.minCosine, 6)}, max abs diff ${fmt(s.maxAbsDiff)}, max relative Frobenius error ${fmt(s.maxRelFroErr)}`,
  ];
  const worst = [...r.tensors].filter((t) => t.loraNonzero > 0).sort((a, b) => (b.maxAbsDiff ?? Infinity) - (a.maxAbsDiff ?? Infinity)).slice(0, 10);
  if (worst.length) {
    out.push('', 'adapted tensors, largest max abs diff first:');
    for (const t of worst) out.push(`  ${t.name}  cosine ${fmt(t.cosine, 6)}  max|diff| ${fmt(t.maxAbsDiff)}  relErr ${fmt(t.relFroErr)}  ||lora|| ${fmt(t.loraNorm)}  ||tau|| ${fmt(t.taskVectorNorm)}`);
  }
  // A norm that is not finite (null) sorts first.
  const outside = r.tensors
    .filter((t) => t.loraNonzero === 0)
    .sort((a, b) => (b.taskVectorNorm ?? Infinity) - (a.taskVectorNorm ?? Infinity) || 0)
    .slice(0, 10);
  if (outside.length) {
    out.push('', 'changed outside the adapter, largest norm first:');
    for (const t of outside) out.push(`  ${t.name}  (${t.category})  ||tau|| ${fmt(t.taskVectorNorm)}`);
  }
  const bad = r.tensors.filter((t) => t.loraNonFinite + t.taskVectorNonFinite > 0);
  if (bad.length) {
    out.push('', 'tensors holding NaN or Inf (elements in the adapter delta / the task vector):');
    for (const t of bad.slice(0, 10)) out.push(`  ${t.name}  ${t.loraNonFinite} / ${t.taskVectorNonFinite}`);
    if (bad.length > 10) out.push(`  … ${bad.length - 10} more`);
  }
  if (r.warnings.length) out.push('', 'warnings:', ...r.warnings.map((w) => `  ${w}`));
  return out.join('\n') + '\n';
}
