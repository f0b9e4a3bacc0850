/**
 * UNMERGE phase 4: which dictionary adapters make up a target, and with what coefficients. The target's
 * compressed task vector y is fitted as D c, D's columns the dictionary's compressed task vectors, by
 * NNLS, OMP or LASSO (solvers.ts), in float64; residual and cosine are recomputed from the data.
 */
import { closeCheckpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { readJson } from '../checkpoint/json';
import { LensError } from '../errors';
import { KernelContext } from '../kernels/kernels';
import { Mask } from '../unmerge/maskFile';
import { uniqueNames } from '../unmerge/names';
import { lambdaMax, lasso, NormalEquations, nnls, omp, OmpStep, Solution, tStatistics } from '../unmerge/solvers';
import { forEachMaskedModule, MaskedSource, openSource } from '../unmerge/sources';
import { DecomposeMethod } from '../../shared/jobs/choices';
import { Verdict, DecomposeReport } from '../../shared/jobs/reports/decompose';

export interface DecomposeOptions {
  mask: string;
  base: string;
  dictionary: string[];
  target: string;
  method: DecomposeMethod;
  /** OMP: stop at this relative residual. */
  tol: number;
  /** An atom is in the support when ||c_j d_j|| >= this * ||y||; OMP also stops when no atom correlates with the residual this much. */
  supportThreshold: number;
  /** An atom is in the support only when its coefficient's t-statistic is at least this; OMP stops below it (see solvers.ts). */
  minT: number;
  /** LASSO's L1 weight relative to lambdaMax (the smallest weight giving all zeros). */
  lambda: number;
  /** LASSO: constrain coefficients to be non-negative. */
  positive: boolean;
  /** The fit is called decomposable up to this relative residual. */
  maxResidual: number;
  /** adapter name -> true coefficient, to score the answer. */
  truth?: Record<string, number>;
}

/** The verdict's thresholds: the dictionary explains at least 99% of the target's energy, or less than half of it. */
const NOT_DECOMPOSABLE_RESIDUAL = Math.SQRT1_2;
/**
 * A residual up to this many times the target's estimated rounding floor is rounding: the estimate counts
 * one or two roundings, and a model merged more than once at half precision carries a few more.
 */
const ROUNDING_SLACK = 2;
/** Above this rounding floor the target's delta is mostly rounding, and a small residual proves nothing. */
const ROUNDING_LIMIT = 0.35;

export async function decomposeJob(o: DecomposeOptions, ctx: KernelContext): Promise<DecomposeReport> {
  if (o.dictionary.length === 0) throw new LensError('--dictionary', 'give at least one dictionary folder');
  const warnings: string[] = [];
  const warn = (m: string): void => {
    warnings.push(m);
    ctx.warn(m);
  };
  const mask = Mask.open(o.mask);
  const base = openCheckpoint(o.base);
  const sources: MaskedSource[] = [];
  try {
    mask.checkBase(base);
    const kernels = await ctx.kernels();
    const names = uniqueNames([...o.dictionary, o.target]);
    for (let j = 0; j < o.dictionary.length; j++) sources.push(openSource(o.dictionary[j], names[j], 'auto', base, mask, kernels, warn));
    sources.push(openSource(o.target, names[o.dictionary.length], 'auto', base, mask, kernels, warn));
    const m = o.dictionary.length;
    const n = mask.total;
    const columns = sources.map(() => new Float32Array(n));
    const offsets = mask.modules.map((_, i) => mask.modules.slice(0, i).reduce((a, x) => a + x.selected, 0));
    let roundingSq = 0;
    await forEachMaskedModule(mask, base, kernels, sources, ctx, 'decompose', (mi, s, values, full) => {
      columns[s].set(values, offsets[mi]);
      if (s === m) roundingSq += full.roundingSq;
    });

    const y = columns[m];
    const p = normalEquations(columns.slice(0, m), y);
    if (!(p.yy > 0)) throw new LensError(o.target, 'its task vector is zero on every masked element: nothing to decompose (is it the base itself?)');
    const dictNames = names.slice(0, m);
    checkDictionary(p, dictNames, warn);

    let sol: Solution;
    let steps: OmpStep[] | undefined;
    let stopReason: string | undefined;
    const parameters: DecomposeReport['parameters'] = { supportThreshold: o.supportThreshold, minT: o.minT, maxResidual: o.maxResidual };
    if (o.method === 'nnls') sol = nnls(p);
    else if (o.method === 'omp') {
      const r = omp(p, { tol: o.tol, minCorrelation: o.supportThreshold, minT: o.minT });
      [sol, steps, stopReason] = [r, r.steps, r.stopReason];
      parameters.tol = o.tol;
    } else {
      const lmax = lambdaMax(p, o.positive);
      sol = lasso(p, { lambda: o.lambda * lmax, positive: o.positive });
      Object.assign(parameters, {
        lambda: o.lambda,
        lambdaAbsolute: o.lambda * lmax,
        lambdaMax: lmax,
        positive: o.positive,
        objective: '0.5 * ||y - D c||^2 + lambdaAbsolute * ||c||_1, lambdaAbsolute = lambda * lambdaMax, lambdaMax = max_j |d_j . y|',
      });
    }
    if (!sol.converged) warn(`${o.method} stopped after ${sol.iterations} iterations without converging`);

    // Residual and cosine from the data: yy - 2 b.c + c.G.c cancels when the fit is good.
    let rr = 0;
    let yr = 0;
    let recSq = 0;
    for (let i = 0; i < n; i++) {
      let rec = 0;
      for (let j = 0; j < m; j++) if (sol.x[j] !== 0) rec += sol.x[j] * columns[j][i];
      const d = y[i] - rec;
      rr += d * d;
      yr += y[i] * rec;
      recSq += rec * rec;
    }
    const ny = Math.sqrt(p.yy);
    const relativeResidual = Math.sqrt(rr) / ny;
    const cosine = recSq > 0 ? Math.max(-1, Math.min(1, yr / (ny * Math.sqrt(recSq)))) : 0;
    const reconstructionError = 1 - Math.max(0, cosine) ** 2;
    const norms = dictNames.map((_, j) => Math.sqrt(p.G[j * m + j]));
    const share = (j: number): number => (Math.abs(sol.x[j]) * norms[j]) / ny;
    // A coefficient indistinguishable from the noise in the residual is reported but is not part of the answer.
    const t = tStatistics(p, sol.x, rr);
    const support = dictNames.filter((_, j) => sol.x[j] !== 0 && share(j) >= o.supportThreshold && Math.abs(t[j]) >= o.minT);
    const roundingFloor = Math.sqrt(roundingSq) / ny;
    const roundingUsable = roundingFloor < ROUNDING_LIMIT;
    if (!roundingUsable) {
      warn(`${sources[m].name}: its storage rounding alone is ${(100 * roundingFloor).toFixed(0)}% of its task vector on the mask: the merge's precision lost most of the delta, and no decomposition of it can be trusted`);
    }
    const withinRounding = roundingUsable && relativeResidual <= ROUNDING_SLACK * roundingFloor;
    const verdict: Verdict =
      relativeResidual <= o.maxResidual || withinRounding ? 'decomposable' : relativeResidual < NOT_DECOMPOSABLE_RESIDUAL ? 'partially decomposable' : 'not decomposable';
    const report: DecomposeReport = {
      method: o.method,
      coefficients: Object.fromEntries(dictNames.map((nm, j) => [nm, sol.x[j]])),
      support,
      relativeResidual,
      reconstructionError,
      cosine,
      explainedEnergy: 1 - relativeResidual ** 2,
      verdict,
      decomposable: verdict === 'decomposable',
      explanation: explain(verdict, relativeResidual, support, relativeResidual > o.maxResidual && withinRounding ? roundingFloor : undefined),
      target: { name: sources[m].name, path: sources[m].path, kind: sources[m].kind, norm: ny },
      device: kernels.description,
      dictionary: dictNames.map((nm, j) => ({
        name: nm,
        path: sources[j].path,
        kind: sources[j].kind,
        norm: norms[j],
        coefficient: sol.x[j],
        share: share(j),
        t: sol.x[j] === 0 ? null : Number.isFinite(t[j]) ? t[j] : null,
        inSupport: support.includes(nm),
      })),
      roundingFloor,
      mask: { path: o.mask, modules: mask.modules.length, selected: n },
      parameters,
      solver: {
        iterations: sol.iterations,
        converged: sol.converged,
        stopReason,
        steps: steps?.map((s) => ({ atom: dictNames[s.atom], t: s.t, relativeResidual: s.relativeResidual })),
      },
      warnings,
    };
    if (o.truth) {
      const unknown = Object.keys(o.truth).filter((k) => !dictNames.includes(k));
      if (unknown.length > 0) warn(`--truth names ${unknown.join(', ')}, not in the dictionary (${dictNames.join(', ')}); they count as missed components`);
      Object.assign(report, score(o.truth, report.coefficients, support));
    }
    return report;
  } finally {
    for (const s of sources) s.close();
    closeCheckpoint(base);
    mask.close();
  }
}

/** G = D^T D, b = D^T y, yy = y^T y, in float64 (each product of two fp32 values is exact). */
export function normalEquations(D: Float32Array[], y: Float32Array): NormalEquations {
  const m = D.length;
  const G = new Float64Array(m * m);
  const b = new Float64Array(m);
  for (let i = 0; i < m; i++) {
    for (let j = i; j < m; j++) {
      let s = 0;
      const di = D[i];
      const dj = D[j];
      for (let t = 0; t < y.length; t++) s += di[t] * dj[t];
      G[i * m + j] = G[j * m + i] = s;
    }
    let s = 0;
    for (let t = 0; t < y.length; t++) s += D[i][t] * y[t];
    b[i] = s;
  }
  let yy = 0;
  for (let t = 0; t < y.length; t++) yy += y[t] * y[t];
  return { m, n: y.length, G, b, yy };
}

/** Zero atoms get coefficient 0; collinear atoms make the split between them arbitrary: both are said plainly. */
function checkDictionary(p: NormalEquations, names: string[], warn: (m: string) => void): void {
  const { m, G } = p;
  for (let i = 0; i < m; i++) {
    if (G[i * m + i] === 0) warn(`${names[i]}: its task vector is zero on the mask; its coefficient is 0 by definition`);
    for (let j = 0; j < i; j++) {
      const c = G[i * m + j] / Math.sqrt(G[i * m + i] * G[j * m + j]);
      if (c > 1 - 1e-9) warn(`${names[i]} and ${names[j]} are duplicates on the mask (cosine ${c.toFixed(12)}); how the target's weight is split between them cannot be determined`);
    }
  }
}

function explain(verdict: Verdict, rel: number, support: string[], rounding?: number): string {
  const pct = (100 * (1 - rel * rel)).toFixed(rel < 0.01 ? 4 : 1);
  const comps = support.length > 0 ? support.join(' + ') : 'no adapter';
  switch (verdict) {
    case 'decomposable':
      return rounding === undefined
        ? `The target is explained by ${comps} (${pct}% of its squared norm on the mask, relative residual ${rel.toExponential(2)}).`
        : `The target is explained by ${comps} up to its own storage rounding (relative residual ${rel.toFixed(3)}, of which its dtype's rounding alone gives about ${rounding.toFixed(3)}).`;
    case 'partially decomposable':
      return `Only part of the target is explained by the dictionary (${pct}% of its squared norm, relative residual ${rel.toFixed(3)}): it likely contains adapters outside the dictionary; the coefficients of ${comps} are approximate.`;
    case 'not decomposable':
      return `Not decomposable: the dictionary explains only ${pct}% of the target's squared norm (relative residual ${rel.toFixed(3)}); the target is not made of these adapters, and the coefficients mean nothing.`;
  }
}

function score(truth: Record<string, number>, coef: Record<string, number>, support: string[]): Partial<DecomposeReport> {
  const trueSupport = Object.keys(truth).filter((k) => truth[k] !== 0);
  const hits = support.filter((s) => trueSupport.includes(s)).length;
  const names = [...new Set([...Object.keys(truth), ...Object.keys(coef)])];
  let errSq = 0;
  let truthSq = 0;
  let maxAbs = 0;
  for (const k of names) {
    const d = (coef[k] ?? 0) - (truth[k] ?? 0);
    errSq += d * d;
    truthSq += (truth[k] ?? 0) ** 2;
    maxAbs = Math.max(maxAbs, Math.abs(d));
  }
  return {
    truth,
    precision: support.length > 0 ? hits / support.length : null,
    recall: trueSupport.length > 0 ? hits / trueSupport.length : null,
    coefficientError: truthSq > 0 ? Math.sqrt(errSq / truthSq) : null,
    coefficientMaxAbsError: maxAbs,
  };
}

export function readTruth(file: string): Record<string, number> {
  const raw = readJson(file);
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw new LensError(file, `coefficient of '${k}' is not a number (found ${JSON.stringify(v)})`);
  }
  return raw as Record<string, number>;
}

