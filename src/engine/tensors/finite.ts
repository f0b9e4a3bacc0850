/**
 * One finiteness report for every job: the tensors where NaN or Inf were met, with their element
 * counts, for the JSON report, and one warning naming the first of them.
 */
import { Dtype } from '../../shared/safetensors/dtypes';

import type { NonFinite } from '../../shared/jobs/reports/merge';
export type { NonFinite };

export class NonFiniteTally {
  private readonly counts = new Map<string, number>();

  add(name: string, elements: number): void {
    if (elements > 0) this.counts.set(name, (this.counts.get(name) ?? 0) + elements);
  }

  get list(): NonFinite[] {
    return [...this.counts].map(([name, elements]) => ({ name, elements }));
  }

  /** The warning for `what` ("the merged model", "the task vector"), or undefined when all was finite. */
  warning(what: string): string | undefined {
    const l = this.list;
    if (l.length === 0) return undefined;
    const total = l.reduce((a, x) => a + x.elements, 0);
    return `NaN or Inf in ${what}: ${total} element(s) in ${l.length} tensor(s), first '${l[0].name}' (${l[0].elements} elements)`;
  }
}

/** NaN and infinite elements of decoded values, and the float64 sum of squares of the finite ones. */
export function finiteSumSq(x: Float32Array): { nonFinite: number; sumSq: number } {
  let nonFinite = 0;
  let sumSq = 0;
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    // v - v is NaN exactly when v is NaN or infinite.
    if (v - v !== 0) nonFinite++;
    else sumSq += v * v;
  }
  return { nonFinite, sumSq };
}

/** NaN and infinite elements of encoded float data (exponent bits all ones); 0 for other dtypes. */
export function nonFiniteEncoded(data: Uint8Array, dtype: Dtype): number {
  const bytes = data.byteOffset % 4 === 0 ? data : data.slice();
  let n = 0;
  if (dtype === 'F32') {
    const v = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 2);
    for (let i = 0; i < v.length; i++) if ((v[i] & 0x7f800000) === 0x7f800000) n++;
  } else if (dtype === 'F16' || dtype === 'BF16') {
    const mask = dtype === 'F16' ? 0x7c00 : 0x7f80;
    const v = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 1);
    for (let i = 0; i < v.length; i++) if ((v[i] & mask) === mask) n++;
  }
  return n;
}
