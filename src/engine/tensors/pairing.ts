/**
 * Pairs the tensors of two checkpoints of the same model (base and finetuned) by name, and says what
 * does not pair: tensors on one side only, different shapes, non-float tensors.
 */
import { Checkpoint } from '../checkpoint/checkpoint';
import { isFloatDtype } from '../../shared/safetensors/dtypes';
import { TensorInfo } from '../../shared/safetensors/header';

export interface TensorPair {
  name: string;
  base: TensorInfo;
  other: TensorInfo;
}

export interface Pairing {
  pairs: TensorPair[];
  onlyInBase: string[];
  onlyInOther: string[];
  shapeMismatches: { name: string; baseShape: number[]; otherShape: number[] }[];
  /** Tensors of an integer or boolean dtype on either side: not part of a task vector. */
  nonFloat: string[];
}

/** Pairs in the base's file order. */
export function pairTensors(base: Checkpoint, other: Checkpoint): Pairing {
  const p: Pairing = { pairs: [], onlyInBase: [], onlyInOther: [], shapeMismatches: [], nonFloat: [] };
  for (const b of base.tensors) {
    const o = other.byName.get(b.name);
    if (!o) p.onlyInBase.push(b.name);
    else if (b.shape.join(',') !== o.shape.join(',')) p.shapeMismatches.push({ name: b.name, baseShape: b.shape, otherShape: o.shape });
    else if (!isFloatDtype(b.dtype) || !isFloatDtype(o.dtype)) p.nonFloat.push(b.name);
    else p.pairs.push({ name: b.name, base: b, other: o });
  }
  for (const o of other.tensors) if (!base.byName.has(o.name)) p.onlyInOther.push(o.name);
  return p;
}

/** A one-line account of what did not pair, or undefined when everything did. */
export function pairingProblems(p: Pairing, otherLabel: string): string | undefined {
  const parts: string[] = [];
  const list = (names: string[]): string => names.slice(0, 3).join(', ') + (names.length > 3 ? `, … (${names.length})` : '');
  if (p.onlyInBase.length) parts.push(`${p.onlyInBase.length} tensor(s) only in the base: ${list(p.onlyInBase)}`);
  if (p.onlyInOther.length) parts.push(`${p.onlyInOther.length} tensor(s) only in the ${otherLabel}: ${list(p.onlyInOther)}`);
  if (p.shapeMismatches.length) parts.push(`${p.shapeMismatches.length} tensor(s) with different shapes: ${list(p.shapeMismatches.map((m) => `${m.name} ${JSON.stringify(m.baseShape)} vs ${JSON.stringify(m.otherShape)}`))}`);
  if (p.nonFloat.length) parts.push(`${p.nonFloat.length} non-float tensor(s) skipped: ${list(p.nonFloat)}`);
  return parts.length ? parts.join('; ') : undefined;
}
