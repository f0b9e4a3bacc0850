/**
 * Sparse and non-negative least squares for `y ~ D c`, D the n x m dictionary (n kept elements, m
 * adapters), all on the normal equations `G = D^T D`, `b = D^T y`, `yy = y^T y`.
 *
 * Why the normal equations: m is the dictionary size (tens) and n the mask budget (up to millions), so
 * G costs one pass over the data and every solver then works in O(m^3) on an m x m matrix, however many
 * iterations it takes. Squaring the condition number is harmless here: the data are fp32, so each
 * product is exact in float64 and G carries ~1e-16 relative error; nearly collinear atoms (the only way
 * to make G ill-conditioned) are detected by the caller and by the Cholesky pivots below; and residuals
 * that matter in reports are recomputed from the data, never from G (yy - b^T c cancels when the fit
 * is good).
 */

export interface NormalEquations {
  m: number;
  /** Length of the vectors (kept elements): the degrees of freedom the noise tests count. */
  n: number;
  /** m x m row-major. */
  G: Float64Array;
  b: Float64Array;
  yy: number;
}

export interface Solution {
  x: Float64Array;
  iterations: number;
  converged: boolean;
}

const EPS = 2.220446049250313e-16;

/** Solves G[S,S] x = b[S] by Cholesky; null when G[S,S] is not numerically positive definite (collinear atoms). */
export function solveOn(p: NormalEquations, S: number[]): Float64Array | null {
  const s = S.length;
  const L = new Float64Array(s * s);
  for (let i = 0; i < s; i++) {
    for (let j = 0; j <= i; j++) {
      let v = p.G[S[i] * p.m + S[j]];
      for (let k = 0; k < j; k++) v -= L[i * s + k] * L[j * s + k];
      if (i === j) {
        // A pivot this small relative to the atom's own squared norm means it lies in the span of the others.
        if (!(v > 1e-10 * p.G[S[i] * p.m + S[i]])) return null;
        L[i * s + i] = Math.sqrt(v);
      } else L[i * s + j] = v / L[j * s + j];
    }
  }
  const z = new Float64Array(s);
  for (let i = 0; i < s; i++) {
    let v = p.b[S[i]];
    for (let k = 0; k < i; k++) v -= L[i * s + k] * z[k];
    z[i] = v / L[i * s + i];
  }
  for (let i = s - 1; i >= 0; i--) {
    let v = z[i];
    for (let k = i + 1; k < s; k++) v -= L[k * s + i] * z[k];
    z[i] = v / L[i * s + i];
  }
  return z;
}

/** w = b - G x: the correlations of the atoms with the residual, d_j^T (y - D x). */
function correlations(p: NormalEquations, x: Float64Array): Float64Array {
  const w = new Float64Array(p.m);
  for (let i = 0; i < p.m; i++) {
    let v = p.b[i];
    for (let j = 0; j < p.m; j++) v -= p.G[i * p.m + j] * x[j];
    w[i] = v;
  }
  return w;
}

/** Largest sqrt(G_jj) * sqrt(yy) times m epsilons: below this a correlation is rounding, not signal. */
function noiseLevel(p: NormalEquations): number {
  let maxDiag = 0;
  for (let j = 0; j < p.m; j++) maxDiag = Math.max(maxDiag, p.G[j * p.m + j]);
  return 10 * p.m * EPS * Math.sqrt(maxDiag * p.yy);
}

/**
 * Non-negative least squares, Lawson and Hanson (1974): grow a passive set with the atom most correlated
 * with the residual, solve unconstrained on it, and step back to the feasible region when a coefficient
 * turns non-positive. Exact at termination (KKT: w_j <= noise for every zero coefficient).
 */
export function nnls(p: NormalEquations, maxIterations = 30 * p.m + 30): Solution {
  const { m } = p;
  const x = new Float64Array(m);
  const passive = new Array<boolean>(m).fill(false);
  const excluded = new Array<boolean>(m).fill(false);
  const tol = noiseLevel(p);
  let iterations = 0;
  for (;;) {
    const w = correlations(p, x);
    let j = -1;
    for (let i = 0; i < m; i++) if (!passive[i] && !excluded[i] && p.G[i * m + i] > 0 && w[i] > tol && (j < 0 || w[i] > w[j])) j = i;
    if (j < 0) return { x, iterations, converged: true };
    passive[j] = true;
    for (;;) {
      if (++iterations > maxIterations) return { x, iterations, converged: false };
      const S = passive.flatMap((on, i) => (on ? [i] : []));
      const s = solveOn(p, S);
      if (!s) {
        // j is a combination of the passive atoms: it cannot improve the fit.
        passive[j] = false;
        excluded[j] = true;
        break;
      }
      if (s.every((v) => v > 0)) {
        S.forEach((i, t) => (x[i] = s[t]));
        break;
      }
      // Step from x toward s as far as feasibility allows; the atom that hits zero first leaves.
      let alpha = Infinity;
      let leaving = -1;
      S.forEach((i, t) => {
        const a = s[t] <= 0 ? x[i] / (x[i] - s[t]) : Infinity;
        if (a < alpha) [alpha, leaving] = [a, i];
      });
      S.forEach((i, t) => {
        x[i] += alpha * (s[t] - x[i]);
        if (i === leaving || x[i] <= 0) {
          x[i] = 0;
          passive[i] = false;
        }
      });
      if (!passive[j] && x[j] === 0) {
        // The newest atom was dropped at once: its positive correlation was rounding; do not retry it.
        excluded[j] = true;
        break;
      }
    }
  }
}

export interface OmpOptions {
  /** Stop when ||r|| / ||y|| falls to this. */
  tol: number;
  /** Stop when no remaining atom has |<d_j, r>| / (||d_j|| ||y||) at least this: it would explain too little to matter. */
  minCorrelation: number;
  /** Stop when the best atom's t-statistic against the residual (see `residualT`) is below this: what is left is noise. */
  minT: number;
}

export interface OmpStep {
  atom: number;
  /** Its t-statistic against the residual when it was picked. */
  t: number;
  /** Relative residual after the atom joined (from the normal equations, accurate to ~1e-8). */
  relativeResidual: number;
}

export interface OmpSolution extends Solution {
  steps: OmpStep[];
  stopReason: string;
}

/**
 * How far atom j's correlation with the residual r stands above noise: `|d_j . r| / (||d_j|| sigma)`,
 * sigma = ||r|| / sqrt(n - s) the residual's per-element spread after s fitted atoms. If r is noise
 * independent of the atoms (storage rounding of a bf16 merge), this is at most a standard normal;
 * an atom still present in r gives ~ sqrt(n) times its share of r.
 */
function residualT(p: NormalEquations, w: number, j: number, rr: number, s: number): number {
  const dof = p.n - s;
  if (!(dof > 0)) return 0;
  const sigma = Math.sqrt(Math.max(0, rr) / dof);
  return sigma > 0 ? Math.abs(w) / (Math.sqrt(p.G[j * p.m + j]) * sigma) : Infinity;
}

/**
 * Orthogonal matching pursuit: add the atom most correlated with the residual (correlation normalised by
 * the atom's norm), refit least squares on the chosen atoms, and stop on a small residual, when the best
 * atom would explain less than `minCorrelation` of y, or when its correlation with the residual is no
 * more than noise gives (`minT`). The last rule is what keeps OMP from picking atoms out of rounding
 * noise once the fit has converged: a bf16 merge leaves a residual of several percent of y, against
 * which every absent atom correlates at about 1/sqrt(n), far above any fixed `minCorrelation` for small n.
 */
export function omp(p: NormalEquations, o: OmpOptions): OmpSolution {
  const { m } = p;
  let x = new Float64Array(m);
  const chosen: number[] = [];
  const skip = new Array<boolean>(m).fill(false);
  for (let j = 0; j < m; j++) skip[j] = !(p.G[j * m + j] > 0);
  const steps: OmpStep[] = [];
  const ny = Math.sqrt(p.yy);
  let rr = p.yy;
  for (;;) {
    const rel = Math.sqrt(Math.max(0, rr) / p.yy);
    if (rel <= o.tol) return { x, iterations: steps.length, converged: true, steps, stopReason: `relative residual ${rel.toExponential(2)} <= tol ${o.tol}` };
    const w = correlations(p, x);
    let j = -1;
    let best = 0;
    for (let i = 0; i < m; i++) {
      if (skip[i]) continue;
      const c = Math.abs(w[i]) / Math.sqrt(p.G[i * m + i]) / ny;
      if (j < 0 || c > best) [j, best] = [i, c];
    }
    if (j < 0) return { x, iterations: steps.length, converged: true, steps, stopReason: 'every atom is in the support' };
    if (best < o.minCorrelation) {
      return { x, iterations: steps.length, converged: true, steps, stopReason: `best remaining correlation with the residual ${best.toExponential(2)} < ${o.minCorrelation}` };
    }
    const t = residualT(p, w[j], j, rr, chosen.length);
    if (t < o.minT) {
      return { x, iterations: steps.length, converged: true, steps, stopReason: `the residual is noise: best remaining atom's t-statistic ${t.toFixed(2)} < ${o.minT}` };
    }
    skip[j] = true;
    const s = solveOn(p, [...chosen, j]);
    if (!s) continue; // collinear with the chosen atoms
    chosen.push(j);
    x = new Float64Array(m);
    chosen.forEach((i, k) => (x[i] = s[k]));
    rr = p.yy;
    chosen.forEach((i) => (rr -= p.b[i] * x[i]));
    steps.push({ atom: j, t, relativeResidual: Math.sqrt(Math.max(0, rr) / p.yy) });
  }
}

/**
 * t-statistics of the non-zero coefficients of `x`, as for least squares on that support: `x_j / SE_j`,
 * SE_j = sigma sqrt((G_SS^-1)_jj), sigma^2 = rr / (n - |S|), rr the residual computed from the data.
 * Where G_SS is singular (duplicate atoms in a LASSO support) SE_j falls back to sigma / ||d_j||.
 * Zero coefficients get 0; an exact fit (rr = 0) gives Infinity.
 */
export function tStatistics(p: NormalEquations, x: Float64Array, rr: number): Float64Array {
  const { m } = p;
  const S = [...x.keys()].filter((j) => x[j] !== 0);
  const t = new Float64Array(m);
  const dof = p.n - S.length;
  const sigma = dof > 0 ? Math.sqrt(Math.max(0, rr) / dof) : NaN;
  const inv = inverseDiagonal(p, S);
  S.forEach((j, k) => {
    const se = sigma * (inv ? Math.sqrt(inv[k]) : 1 / Math.sqrt(p.G[j * m + j]));
    t[j] = se > 0 ? x[j] / se : Number.isNaN(se) ? 0 : x[j] > 0 ? Infinity : -Infinity;
  });
  return t;
}

/** Diagonal of G[S,S]^-1, or null when it is singular. */
function inverseDiagonal(p: NormalEquations, S: number[]): Float64Array | null {
  const out = new Float64Array(S.length);
  for (let k = 0; k < S.length; k++) {
    const unit = new Float64Array(p.m);
    unit[S[k]] = 1;
    const col = solveOn({ ...p, b: unit }, S);
    if (!col) return null;
    out[k] = col[k];
  }
  return out;
}

export interface LassoOptions {
  /** The L1 weight, absolute: minimises 0.5 ||y - D c||^2 + lambda ||c||_1. */
  lambda: number;
  positive: boolean;
  maxIterations?: number;
}

/** The smallest lambda at which the LASSO solution is all zeros: max_j |d_j^T y| (max_j d_j^T y when positive). */
export function lambdaMax(p: NormalEquations, positive: boolean): number {
  let v = 0;
  for (let j = 0; j < p.m; j++) v = Math.max(v, positive ? p.b[j] : Math.abs(p.b[j]));
  return v;
}

/**
 * LASSO by cyclic coordinate descent: each coefficient in turn is set to its exact minimiser given the
 * others (a soft threshold), until no coefficient's contribution moves by more than 1e-12 ||y||.
 */
export function lasso(p: NormalEquations, o: LassoOptions): Solution {
  const { m } = p;
  const x = new Float64Array(m);
  const max = o.maxIterations ?? 100_000;
  const ny = Math.sqrt(p.yy);
  for (let it = 1; it <= max; it++) {
    let moved = 0;
    for (let j = 0; j < m; j++) {
      const gjj = p.G[j * m + j];
      if (!(gjj > 0)) continue;
      let rho = p.b[j];
      for (let k = 0; k < m; k++) if (k !== j) rho -= p.G[j * m + k] * x[k];
      let v = Math.max(0, Math.abs(rho) - o.lambda) * Math.sign(rho);
      if (o.positive) v = Math.max(0, v);
      v /= gjj;
      moved = Math.max(moved, Math.abs(v - x[j]) * Math.sqrt(gjj));
      x[j] = v;
    }
    if (moved <= 1e-12 * ny) return { x, iterations: it, converged: true };
  }
  return { x, iterations: max, converged: false };
}
