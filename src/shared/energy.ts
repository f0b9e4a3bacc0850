/** How many singular values hold a share of a delta's energy: what resize --energy writes, and what its preview predicts. */

/** The smallest k whose top-k squared values hold at least `fraction` of the total (0 for an all-zero spectrum). */
export function energyRank(s: ArrayLike<number>, fraction: number): number {
  let total = 0;
  for (let i = 0; i < s.length; i++) total += s[i] * s[i];
  if (total === 0) return 0;
  // A relative slack of a few ulps: a fraction of exactly 1 is met by the whole spectrum despite rounding.
  const goal = fraction * total * (1 - 4 * Number.EPSILON * s.length);
  let acc = 0;
  for (let k = 0; k < s.length; k++) {
    acc += s[k] * s[k];
    if (acc >= goal) return k + 1;
  }
  return s.length;
}
