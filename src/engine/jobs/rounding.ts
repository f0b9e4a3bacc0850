/**
 * How far a half-precision merge may move an element from base + delta: the allowance compare uses to
 * judge a merged model against the rounding its dtype must make (as validate does), so a bf16 merge
 * reads "expected loss", not "not equivalent".
 *
 * Every merge rule (CLI.md) rounds at most three times to the stored dtype D, each time by at most
 * u·|x| (RNE, u = 2^-(significand bits)) or half a subnormal step: r(W), r(d) (peft-safe) and
 * r(… + d). So |τ - d| ≤ u·(|W| + |d| + |W + d|)·(1 + 4u) + 3η. The fp32 arithmetic on our side
 * (τ = merged - W, d = s·B@A in another summation order) adds a few fp32 ulps, allowed as 2^-22·(|W| + |d|);
 * the user's tolerance is added on top.
 */
import { FloatDtype } from '../../shared/safetensors/dtypes';

/** Unit roundoff and half the smallest subnormal of the half dtypes; F32/F64 merges get no allowance. */
const HALF: Partial<Record<FloatDtype, { u: number; eta: number }>> = {
  F16: { u: 2 ** -11, eta: 2 ** -25 },
  BF16: { u: 2 ** -8, eta: 2 ** -134 },
};
const FP32_SLACK = 2 ** -22;

export function isHalf(dtype: string): boolean {
  return dtype in HALF;
}

/**
 * How many elements of the task vector `tau` lie outside the rounding of `w + d` to `dtype` (plus
 * `tolerance`); `d` null is a zero delta (a tensor changed outside the adapter: a cast artifact at most).
 * A non-finite element is always outside.
 */
export function outsideRounding(dtype: FloatDtype, w: Float32Array, d: Float32Array | null, tau: Float32Array, tolerance: number): number {
  const { u, eta } = HALF[dtype] ?? { u: 0, eta: 0 };
  const grow = u * (1 + 4 * u);
  let outside = 0;
  for (let i = 0; i < tau.length; i++) {
    const wi = Math.abs(w[i]);
    const di = d === null ? 0 : d[i];
    const bound = tolerance + grow * (wi + Math.abs(di) + Math.abs(w[i] + di)) + 3 * eta + FP32_SLACK * (wi + Math.abs(di));
    // Written so that NaN counts as outside.
    if (!(Math.abs(tau[i] - di) <= bound)) outside++;
  }
  return outside;
}
