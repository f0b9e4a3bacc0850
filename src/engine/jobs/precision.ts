/**
 * precision: what merging at fp16 / bf16 does, without writing a model. Against the fp32 base, every
 * tensor the cast alone changes is a cast artifact; in adapted tensors, delta elements smaller than
 * half an ulp of their weight are swallowed. Statistics per tensor come from kernels.precision.
 */
import { emptyPrecisionStats, addPrecisionStats } from '../kernels/cpuMath';
import { HalfDtype, KernelContext, Kernels, PrecisionStats } from '../kernels/kernels';
import { MergeRule } from '../../shared/jobs/choices';
import { CLI_DTYPES, isFloatDtype } from '../../shared/safetensors/dtypes';
import { bytesToF32, Scratch } from '../safetensors/reader';
import { TensorInfo } from '../../shared/safetensors/header';
import { JobContext, throwIfCancelled } from '../util/job';
import { LensError } from '../errors';
import { effectiveDelta, Factors } from '../tensors/delta';
import { wholeTensor } from '../checkpoint/deltaRule';
import { AdapterPlan, closePlan, planAdapter } from '../tensors/plan';
import { Block, blockInfo, blocksOf, prefetched, readBlock, sameRows } from '../tensors/stream';
import { finite } from '../tensors/stats';
import { NonFiniteTally } from '../tensors/finite';
import { HalfCliDtype, PrecisionFigures, PrecisionTensor, PrecisionDtype, PrecisionReport } from '../../shared/jobs/reports/precision';
import { DEFAULT_RULE } from '../../shared/jobs/choices';

export interface PrecisionSettings {
  dtypes: HalfCliDtype[];
  /** Rules to evaluate; the first is the one the dtype-level figures show. */
  rules: MergeRule[];
}

/** What merging `adapter` into `base` at each of `dtypes` loses. */
export interface PrecisionOptions extends PrecisionSettings {
  base: string;
  adapter: string;
}

export function parsePrecisionDtypes(list: string[]): HalfCliDtype[] {
  const out: HalfCliDtype[] = [];
  for (const d of list) {
    if (d === 'fp32') continue; // nothing is cast at fp32
    if (d !== 'fp16' && d !== 'bf16') throw new LensError('--dtypes', `must be fp16 and/or bf16 (got ${JSON.stringify(d)})`);
    if (!out.includes(d)) out.push(d);
  }
  return out;
}

export async function precisionJob(opts: PrecisionOptions, ctx: KernelContext): Promise<PrecisionReport> {
  const plan = planAdapter(opts.base, opts.adapter, ctx);
  try {
    return await precisionOf(plan, opts, await ctx.kernels(), ctx);
  } finally {
    closePlan(plan);
  }
}

interface Step {
  t: TensorInfo;
  block: Block;
  rep?: TensorInfo;
}

export async function precisionOf(plan: AdapterPlan, opts: PrecisionSettings, kernels: Kernels, ctx: JobContext): Promise<PrecisionReport> {
  const t0 = performance.now();
  if (opts.dtypes.length === 0) throw new LensError('--dtypes', 'name at least one of fp16, bf16');
  const floats = plan.base.tensors.filter((t) => isFloatDtype(t.dtype));
  const steps: Step[] = floats.flatMap((t) => {
    const m = plan.loraByBase.get(t.name);
    return blocksOf(t, m && wholeTensor(m) ? Infinity : undefined, m !== undefined).map((block) => ({ t, block, rep: plan.replaceByBase.get(t.name)?.source }));
  });
  const scratch = new Scratch();
  const factors = new Factors(plan.adapter);
  const combos = opts.dtypes.flatMap((dtype) => opts.rules.map((rule) => ({ dtype, rule })));
  const perTensor = new Map<string, PrecisionStats>();
  const tensors: PrecisionTensor[] = [];
  let done = 0;
  const read = async (s: Step, slot: 0 | 1): Promise<[Uint8Array, Uint8Array | undefined]> =>
    Promise.all([
      readBlock(plan.base.handles, s.block, scratch.bytes(`base${slot}`, blockInfo(s.block).byteLength)),
      s.rep ? readBlock(plan.adapter.handles, sameRows(s.block, s.rep), scratch.bytes(`rep${slot}`, blockInfo(sameRows(s.block, s.rep)).byteLength)) : undefined,
    ]);
  for await (const { step, data: [raw, rawRep] } of prefetched(steps, read)) {
    throwIfCancelled(ctx);
    const b = step.block;
    const n = b.numel;
    const w = bytesToF32(blockInfo(b), raw, scratch.f32('w', n));
    const m = plan.loraByBase.get(step.t.name);
    let d: Float32Array | null = null;
    if (m) {
      // DoRA and IA³: the effective delta of their fp32 merge, merged at the half dtype as a plain delta.
      d = await effectiveDelta(kernels, factors, m, b, w, scratch.f32('delta', n), scratch);
    } else if (rawRep) {
      // A replacement acts as the delta (saved - base) on top of the base.
      const r = bytesToF32(blockInfo(sameRows(b, step.rep!)), rawRep, scratch.f32('rep', n));
      d = await kernels.subtract(r, w, scratch.f32('delta', n));
    }
    for (const dtype of opts.dtypes) {
      let plain: PrecisionStats | undefined;
      for (const rule of opts.rules) {
        const key = `${dtype}/${rule}`;
        // Without a delta every rule gives r(W): compute once per dtype.
        const s =
          d === null
            ? (plain ??= await kernels.precision(w, null, CLI_DTYPES[dtype] as HalfDtype, rule))
            : await kernels.precision(w, d, CLI_DTYPES[dtype] as HalfDtype, rule);
        perTensor.set(key, addPrecisionStats(perTensor.get(key) ?? emptyPrecisionStats(), s));
      }
    }
    if (b.last) {
      for (const { dtype, rule } of combos) {
        const key = `${dtype}/${rule}`;
        tensors.push({
          name: step.t.name,
          dtype,
          rule,
          loraTarget: m !== undefined,
          replaced: step.rep !== undefined,
          ...figures(perTensor.get(key)!, d !== null),
        });
        perTensor.delete(key);
      }
      done++;
    }
    ctx.progress({ phase: 'precision', done, total: floats.length, tensor: step.t.name });
  }
  // A tensor's NaN/Inf elements under the worst dtype and rule (an overflow of fp16's range is fp16's alone).
  const tally = new NonFiniteTally();
  const worst = new Map<string, number>();
  for (const t of tensors) worst.set(t.name, Math.max(worst.get(t.name) ?? 0, t.nonFiniteElements));
  for (const [name, n] of worst) tally.add(name, n);
  const nonFiniteWarning = tally.warning(`the base, the adapter's delta or their ${opts.dtypes.join('/')} merge`);
  if (nonFiniteWarning) ctx.warn(`${nonFiniteWarning}; those elements are left out of the figures`);
  const dtypes: PrecisionReport['dtypes'] = {};
  for (const dtype of opts.dtypes) {
    const rules: PrecisionDtype['rules'] = {};
    for (const rule of opts.rules) rules[rule] = aggregate(tensors.filter((t) => t.dtype === dtype && t.rule === rule));
    dtypes[dtype] = { ...rules[opts.rules[0]]!, rule: opts.rules[0], rules };
  }
  return {
    base: plan.base.path,
    adapter: plan.adapter.path,
    device: kernels.description,
    defaultRule: DEFAULT_RULE,
    rules: opts.rules,
    dtypes,
    tensors,
    nonFinite: tally.list,
    warnings: nonFiniteWarning ? [...plan.warnings, `${nonFiniteWarning}; those elements are left out of the figures`] : plan.warnings,
    seconds: (performance.now() - t0) / 1000,
  };
}

/**
 * Figures of one tensor from its statistics summed over its blocks. A tensor counts as adapted when its
 * delta has a non-zero element: a targeted tensor whose delta is all zeros (lora_B as PEFT initialises
 * it) changes only through the cast, so it is a cast artifact, as compare counts it (task vector only).
 */
function figures(s: PrecisionStats, targeted: boolean): PrecisionFigures {
  const adapted = targeted && s.deltaNonzero > 0;
  const cast = !adapted && s.changed > 0;
  return {
    nonzeroTensors: s.changed > 0 ? 1 : 0,
    castArtifactTensors: cast ? 1 : 0,
    castArtifactNorm: cast ? Math.sqrt(s.changedSq) : 0,
    deltaLostFraction: adapted && s.deltaNonzero > 0 ? s.lost / s.deltaNonzero : null,
    recoveredRelErr: adapted && s.deltaSq > 0 ? finite(Math.sqrt(s.recoveredErrSq / s.deltaSq)) : null,
    adaptedTensors: adapted ? 1 : 0,
    deltaElements: adapted ? s.deltaNonzero : 0,
    lostElements: adapted ? s.lost : 0,
    changedElements: s.changed,
    deltaSq: adapted ? s.deltaSq : 0,
    recoveredErrSq: adapted ? s.recoveredErrSq : 0,
    nonFiniteTensors: s.nonFinite > 0 ? 1 : 0,
    nonFiniteElements: s.nonFinite,
  };
}

/** Totals over tensors: counts add, norms and ratios are rebuilt from the sums of squares. */
function aggregate(ts: PrecisionFigures[]): PrecisionFigures {
  const sum = (f: (t: PrecisionFigures) => number): number => ts.reduce((a, t) => a + f(t), 0);
  const deltaElements = sum((t) => t.deltaElements);
  const deltaSq = sum((t) => t.deltaSq);
  return {
    nonzeroTensors: sum((t) => t.nonzeroTensors),
    castArtifactTensors: sum((t) => t.castArtifactTensors),
    castArtifactNorm: Math.sqrt(sum((t) => t.castArtifactNorm ** 2)),
    deltaLostFraction: deltaElements > 0 ? sum((t) => t.lostElements) / deltaElements : null,
    recoveredRelErr: deltaSq > 0 ? finite(Math.sqrt(sum((t) => t.recoveredErrSq) / deltaSq)) : null,
    adaptedTensors: sum((t) => t.adaptedTensors),
    deltaElements,
    lostElements: sum((t) => t.lostElements),
    changedElements: sum((t) => t.changedElements),
    deltaSq,
    recoveredErrSq: sum((t) => t.recoveredErrSq),
    nonFiniteTensors: sum((t) => t.nonFiniteTensors),
    nonFiniteElements: sum((t) => t.nonFiniteElements),
  };
}

function pct(x: number | null): string {
  return x === null ? 'n/a' : `${(100 * x).toPrecision(3)}%`;
}

/** The readable report: per dtype and rule, cast artifacts and the share of the delta lost. */
export function precisionText(r: PrecisionReport): string {
  const out = [
    'LoRA Lens: what merging at half precision loses (against the fp32 base)',
    `base:     ${r.base}`,
    `adapter:  ${r.adapter}`,
    `numerics: ${r.device}`,
    `default rule: ${r.defaultRule} (what PEFT's merge_and_unload() gives)`,
    '',
    'dtype  rule        changed tensors  cast artifacts (norm)      delta elements lost     recovered delta rel. error',
  ];
  for (const [dtype, d] of Object.entries(r.dtypes)) {
    for (const [rule, f] of Object.entries(d!.rules)) {
      out.push(
        `${dtype.padEnd(6)} ${rule.padEnd(11)} ${String(f!.nonzeroTensors).padStart(15)}  ${`${f!.castArtifactTensors} (${f!.castArtifactNorm.toExponential(2)})`.padEnd(25)}  ` +
          `${`${f!.lostElements} / ${f!.deltaElements} (${pct(f!.deltaLostFraction)})`.padEnd(22)}  ${f!.recoveredRelErr === null ? 'n/a' : f!.recoveredRelErr.toExponential(2)}`,
      );
      if (f!.nonFiniteTensors > 0) {
        const first = r.tensors.find((t) => t.dtype === dtype && t.rule === rule && t.nonFiniteElements > 0)!;
        out.push(
          `       NaN or Inf in ${f!.nonFiniteElements} element(s) of ${f!.nonFiniteTensors} tensor(s) (in the base, the delta, or past ${dtype}'s range), ` +
            `first '${first.name}' (${first.nonFiniteElements}): left out of the figures above`,
        );
      }
    }
  }
  out.push(
    '',
    'cast artifacts: tensors the adapter does not touch that differ from the fp32 base only because of the cast;',
    'delta elements lost: non-zero delta elements whose merged value equals the cast base (the delta was swallowed).',
  );
  const na = Object.values(r.dtypes).some((d) => Object.values(d!.rules).some((f) => f!.deltaLostFraction === null || f!.recoveredRelErr === null));
  if (na) out.push('n/a: no adapted tensor with a non-zero finite delta to measure' + (r.nonFinite.length ? ' (NaN or Inf: see above)' : ' (its deltas are all zero)') + '.');
  if (r.warnings.length) out.push('', 'warnings:', ...r.warnings.map((w) => `  ${w}`));
  return out.join('\n') + '\n';
}
