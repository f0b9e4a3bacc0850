/**
 * Whether a file given as a task vector is one, and not a full model: a model passed where τ = finetuned −
 * base is expected would be compared as if its weights were the change, and its difference blamed on
 * rounding.
 *
 * A file `lora-lens extract` wrote carries the task-vector mark in its metadata and is taken as it is.
 * Any other file (a task vector from another tool carries no mark) is judged by magnitude against the
 * base: a model is the base plus a small change, x = w + τ with ‖τ‖ ≪ ‖w‖, so it lies much nearer the base
 * than zero (‖x − w‖ ≪ ‖x‖); a task vector lies near zero, ‖τ − w‖ ≈ ‖w‖ ≫ ‖τ‖. The file is refused when,
 * over a sample of the tensors it shares with the base, ‖x − w‖ < ‖x‖ / 2 (summed in float64): it is twice
 * as near the base as zero. For a task vector to be refused, fine-tuning would have to have more than
 * doubled the weights (τ ≈ w). The sample is the smallest tensors (norms and biases, which are ≈1 and ≈0
 * in a model but ≈0 in a task vector), at most SAMPLE_TENSORS with a non-zero base and SAMPLE_ELEMENTS in
 * all, so the check costs a few reads whatever the model's size.
 */
import { isFloatDtype } from '../../shared/safetensors/dtypes';
import { TensorInfo } from '../../shared/safetensors/header';
import { LensError } from '../errors';
import { bytesToF32 } from '../safetensors/reader';
import { Checkpoint } from './checkpoint';

const SAMPLE_TENSORS = 16;
const SAMPLE_ELEMENTS = 1 << 22;

function values(c: Checkpoint, t: TensorInfo): Float32Array {
  return bytesToF32(t, c.handles.readBytesSync(t, new Uint8Array(t.byteLength)), new Float32Array(t.numel));
}

/** Refuses (exit 2, naming `shown`) a file without the task-vector mark that is a model rather than a task vector. */
export function assertTaskVector(base: Checkpoint, file: Checkpoint, shown: string): void {
  if (file.kind === 'task-vector') return;
  const shared = file.tensors
    .filter((t) => isFloatDtype(t.dtype) && t.numel > 0 && t.numel <= SAMPLE_ELEMENTS)
    .map((t) => [t, base.byName.get(t.name)] as const)
    .filter(([t, b]) => b !== undefined && isFloatDtype(b.dtype) && b.shape.join(',') === t.shape.join(','))
    .sort(([a], [b]) => a.numel - b.numel || (a.name < b.name ? -1 : 1));
  let nearBase = 0;
  let nearZero = 0;
  let used = 0;
  let elements = 0;
  let example = '';
  for (const [t, b] of shared) {
    if (used >= SAMPLE_TENSORS || elements + t.numel > SAMPLE_ELEMENTS) break;
    const x = values(file, t);
    const w = values(base, b!);
    let dSq = 0;
    let xSq = 0;
    let wSq = 0;
    for (let i = 0; i < x.length; i++) {
      const d = x[i] - w[i];
      // NaN and Inf are left out (v - v is NaN exactly for them): they say nothing about magnitude.
      if (d - d !== 0 || x[i] - x[i] !== 0) continue;
      dSq += d * d;
      xSq += x[i] * x[i];
      wSq += w[i] * w[i];
    }
    elements += t.numel;
    if (wSq === 0) continue;
    used++;
    nearBase += dSq;
    nearZero += xSq;
    example ||= t.name;
  }
  if (nearZero > 0 && nearBase < nearZero / 4) {
    const pct = (100 * Math.sqrt(nearBase / nearZero)).toPrecision(2);
    throw new LensError(
      shown,
      `is a full model, not a task vector: its tensors differ from the base's by ${pct}% of their norm (${used} tensor(s) compared, e.g. '${example}'), where a task vector is the difference itself; give a model as --finetuned, or a task vector written by lora-lens extract`,
    );
  }
}
