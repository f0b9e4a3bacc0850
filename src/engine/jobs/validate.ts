/**
 * validate: for each dtype, merge, extract the merged model's task vector, compare it with the
 * adapter's deltas and (fp16/bf16) predict the precision loss; one subfolder per dtype, a summary.json
 * and a report.txt whose verdict says, per dtype, whether the merge holds what the adapter says. The
 * merged models and task vectors (about 4x the base's size in all) are removed once checked unless
 * `keepModels`, so by default the output folder holds reports alone.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { openCheckpoint } from '../checkpoint/checkpoint';
import { LensError } from '../errors';
import { KernelContext, Kernels } from '../kernels/kernels';
import { MergeRule } from '../../shared/jobs/choices';
import { CliDtype } from '../../shared/safetensors/dtypes';
import { formatBytes } from '../../shared/format';
import { writeFileAtomic } from '../safetensors/writer';
import { JobContext, throwIfCancelled } from '../util/job';
import { withOutputDir } from '../util/outputDir';
import { CompareSummary } from '../../shared/jobs/reports/compare';
import { compareInto } from './compare';
import { extractInto } from './extract';
import { ExtractReport } from '../../shared/jobs/reports/extract';
import { mergeInto } from './merge';
import { AdapterPlan, closePlan, planAdapter } from '../tensors/plan';
import { PrecisionFigures } from '../../shared/jobs/reports/precision';
import { precisionOf, precisionText } from './precision';
import { ValidateDtype, ValidateReport } from '../../shared/jobs/reports/validate';

/** Merge, extract, compare and precision of `adapter` on `base` for each dtype, written into `out`. */
export interface ValidateOptions {
  base: string;
  adapter: string;
  out: string;
  dtypes: CliDtype[];
  rule: MergeRule;
  tolerance: number;
  /** Keep each dtype's merged model and task vector (else removed once checked: reports only). */
  keepModels: boolean;
}

export async function validateJob(opts: ValidateOptions, ctx: KernelContext): Promise<ValidateReport> {
  const { base: basePath, adapter: adapterPath, out } = opts;
  if (opts.dtypes.length === 0) throw new LensError('--dtypes', 'name at least one of fp32, fp16, bf16');
  const plan = planAdapter(basePath, adapterPath, ctx);
  try {
    const kernels = await ctx.kernels();
    return await withOutputDir('validate', out, [basePath, adapterPath], (dir) => validateInto(dir.tmp, plan, opts, kernels, ctx));
  } finally {
    closePlan(plan);
  }
}

async function validateInto(dir: string, plan: AdapterPlan, opts: ValidateOptions, kernels: Kernels, ctx: JobContext): Promise<ValidateReport> {
  const t0 = performance.now();
  const results: ValidateDtype[] = [];
  // Progress says where in the whole run a phase is: "step 5 of 11: bf16 merge 40/483".
  const stepsTotal = opts.dtypes.reduce((n, d) => n + (d === 'fp32' ? 3 : 4), 0);
  let step = 0;
  const stepCtx = (dtype: string): JobContext => {
    const k = ++step;
    return {
      signal: ctx.signal,
      progress: (p) => ctx.progress({ ...p, phase: `step ${k} of ${stepsTotal}: ${dtype} ${p.phase}` }),
      warn: (m) => ctx.warn(m),
      log: (m) => ctx.log(m),
    };
  };
  for (const dtype of opts.dtypes) {
    throwIfCancelled(ctx);
    const sub = path.join(dir, dtype);
    fs.mkdirSync(sub);
    assertDiskSpace(sub, plan, dtype, opts.keepModels);
    const mergedDir = path.join(sub, 'merged');
    fs.mkdirSync(mergedDir);
    const merge = await mergeInto(mergedDir, plan, { dtype, rule: opts.rule }, kernels, stepCtx(dtype));
    writeFileAtomic(path.join(sub, 'merge.json'), JSON.stringify({ ...merge, out: mergedDir }, null, 2) + '\n');
    const merged = openCheckpoint(mergedDir);
    const tvFile = path.join(sub, 'task_vector.safetensors');
    let extract: ExtractReport;
    try {
      extract = await extractInto(plan.base, merged, tvFile, kernels, stepCtx(dtype));
    } finally {
      merged.handles.close();
    }
    writeFileAtomic(path.join(sub, 'extract.json'), JSON.stringify(extract, null, 2) + '\n');
    const tv = openCheckpoint(tvFile);
    let compare;
    try {
      compare = await compareInto(sub, plan, tv, 'task-vector', { tolerance: opts.tolerance, saveDeltas: false }, kernels, stepCtx(dtype));
    } finally {
      tv.handles.close();
    }
    let precision: PrecisionFigures | null = null;
    if (dtype !== 'fp32') {
      const p = await precisionOf(plan, { dtypes: [dtype], rules: [opts.rule] }, kernels, stepCtx(dtype));
      writeFileAtomic(path.join(sub, 'precision.json'), JSON.stringify(p, null, 2) + '\n');
      writeFileAtomic(path.join(sub, 'precision.txt'), precisionText(p));
      precision = p.dtypes[dtype]!;
    }
    if (!opts.keepModels) {
      fs.rmSync(mergedDir, { recursive: true, force: true });
      fs.rmSync(tvFile, { force: true });
    }
    results.push(judge(dtype, sub, merge, extract, compare.summary, precision));
  }
  const ok = results.every((r) => r.status !== 'FAIL');
  const report: ValidateReport = {
    base: plan.base.path,
    adapter: plan.adapter.path,
    rule: opts.rule,
    device: kernels.description,
    tolerance: opts.tolerance,
    dtypes: results.map((r) => ({ ...r, folder: path.basename(r.folder) })),
    ok,
    keptModels: opts.keepModels,
    verdict: ok ? 'Every merge holds exactly what the adapter says, up to the rounding its dtype must make.' : `FAIL at ${results.filter((r) => r.status === 'FAIL').map((r) => r.dtype).join(', ')}: see below.`,
    warnings: plan.warnings,
    seconds: (performance.now() - t0) / 1000,
  };
  writeFileAtomic(path.join(dir, 'summary.json'), JSON.stringify(report, null, 2) + '\n');
  writeFileAtomic(path.join(dir, 'report.txt'), validateText(report));
  return report;
}

/**
 * fp32: the merged model's task vector must equal the deltas within tolerance. fp16/bf16: it cannot
 * (rounding), so the check is that the damage is exactly the predicted one: the tensors changed outside
 * the adapter are the predicted cast artifacts, and the adapted tensors all changed.
 */
function judge(
  dtype: CliDtype,
  folder: string,
  merge: Awaited<ReturnType<typeof mergeInto>>,
  extract: ExtractReport,
  c: CompareSummary,
  p: PrecisionFigures | null,
): ValidateDtype {
  const base = {
    dtype,
    folder,
    merge: { tensors: merge.tensors, loraTensors: merge.loraTensors, files: merge.files, seconds: merge.seconds },
    extract: extract.summary,
    compare: c,
    precision: p,
  };
  if (p === null) {
    // An adapter whose deltas are all zero (lora_B as PEFT initialises it) merges to the base itself.
    if (c.shared + c.loraOnly === 0 && c.taskVectorOnly === 0) {
      return { ...base, status: 'PASS', verdict: 'PASS: every delta of the adapter is zero, and the fp32 merge equals the base tensor for tensor.' };
    }
    return c.equivalent
      ? { ...base, status: 'PASS', verdict: `PASS: the fp32 merge equals base + adapter: ${c.shared} adapted tensors within ${c.tolerance} (max abs diff ${c.maxAbsDiff}), ${c.taskVectorOnly} other tensors changed.` }
      : { ...base, status: 'FAIL', verdict: `FAIL: the fp32 merge differs from base + adapter. ${c.verdict}` };
  }
  // Adapted tensors the merge changed are the shared ones; every other changed tensor is a predicted cast artifact.
  const consistent = c.taskVectorOnly === p.castArtifactTensors && c.shared === p.nonzeroTensors - p.castArtifactTensors;
  const lost = p.deltaLostFraction === null ? 'n/a' : `${(100 * p.deltaLostFraction).toPrecision(3)}%`;
  const damage = `${lost} of the delta's non-zero elements are swallowed by the rounding, the recovered delta is off by ${p.recoveredRelErr?.toExponential(2) ?? 'n/a'} (relative), and ${p.castArtifactTensors} untouched tensors differ from the fp32 base by the cast alone`;
  return consistent
    ? { ...base, status: 'EXPECTED-LOSS', verdict: `EXPECTED LOSS at ${dtype}: ${damage}. The merged model shows exactly this.` }
    : { ...base, status: 'FAIL', verdict: `FAIL at ${dtype}: the merged model does not show the predicted loss (${damage}). ${c.verdict}` };
}

function validateText(r: ValidateReport): string {
  const out = [
    'LoRA Lens: validation of merging an adapter into its base',
    `base:     ${r.base}`,
    `adapter:  ${r.adapter}`,
    `rule:     ${r.rule}`,
    `numerics: ${r.device}`,
    '',
    r.verdict,
    '',
  ];
  for (const d of r.dtypes) {
    out.push(`[${d.dtype}] ${d.verdict}`);
    out.push(`  merge: ${d.merge.tensors} tensors (${d.merge.loraTensors} with a LoRA delta) in ${d.merge.seconds.toFixed(1)} s${r.keptModels ? ` -> ${d.folder}/merged/` : ' (not kept; --keep-models keeps it)'}`);
    out.push(`  task vector: ${d.extract.nonzeroTensors} non-zero tensors of ${d.extract.tensors}, ${d.extract.nonzeroElements} non-zero elements`);
    out.push(`  compare: ${d.compare.shared} shared, ${d.compare.perfectMatches} perfect (cosine > 0.9999), ${d.compare.taskVectorOnly} changed outside the adapter, mean cosine ${d.compare.meanCosine ?? 'n/a'}, max abs diff ${d.compare.maxAbsDiff ?? 'n/a'}`);
    out.push('');
  }
  if (r.warnings.length) out.push('warnings:', ...r.warnings.map((w) => `  ${w}`));
  return out.join('\n') + '\n';
}

/** Refuses to start a dtype whose merged model and task vector would not fit on the disk. */
function assertDiskSpace(dir: string, plan: AdapterPlan, dtype: CliDtype, keep: boolean): void {
  const elements = plan.base.tensors.reduce((a, t) => a + t.numel, 0);
  const need = elements * (dtype === 'fp32' ? 4 : 2) + elements * 4;
  let free: number;
  try {
    const s = fs.statfsSync(dir);
    free = s.bavail * s.bsize;
  } catch {
    return;
  }
  if (need > free) {
    throw new LensError(dir, `the ${dtype} merged model and task vector need about ${formatBytes(need)} but only ${formatBytes(free)} are free${keep ? ' (without --keep-models each dtype\'s files are removed once checked)' : ''}`);
  }
}
