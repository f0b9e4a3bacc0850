/**
 * An adapter's deltas in factor form for the low-rank toolbox: each module's ΔW = L·Rᵀ in float64 with
 * L = s·B (out × r) and R = Aᵀ (in × r), whatever the delta's storage orientation (Conv1D and embedding
 * deltas are stored transposed; their singular values and best approximations are the same).
 */
import { adapterLayout, AdapterLayout, LoraModule } from '../checkpoint/adapter';
import { Checkpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { LensError } from '../errors';
import { Mat, zeros } from '../linalg/dense';
import { bytesToF32 } from '../safetensors/reader';

export interface FactorAdapter {
  checkpoint: Checkpoint;
  layout: AdapterLayout;
}

/** Opens an adapter folder that must hold at least one LoRA module. */
export function openFactorAdapter(p: string): FactorAdapter {
  const checkpoint = openCheckpoint(p);
  try {
    if (checkpoint.kind !== 'adapter') throw new LensError(p, 'not a PEFT adapter folder (no adapter_config.json)');
    const layout = adapterLayout(checkpoint);
    if (layout.modules.length === 0) throw new LensError(checkpoint.files[0], 'the adapter holds no LoRA factors (lora_A / lora_B): it adapts nothing');
    return { checkpoint, layout };
  } catch (e) {
    checkpoint.handles.close();
    throw e;
  }
}

function readF32(c: Checkpoint, t: LoraModule['A']): Float32Array {
  const raw = c.handles.readBytesSync(t, new Uint8Array(t.byteLength));
  const v = bytesToF32(t, raw, new Float32Array(t.numel));
  for (let i = 0; i < v.length; i++) {
    if (!Number.isFinite(v[i])) throw new LensError(t.file, `non-finite value at element ${i}`, t.name);
  }
  return v;
}

/** L = s·B (out × r) and R = Aᵀ (in × r) of one module, in float64. */
export function readFactors(c: Checkpoint, m: LoraModule): { L: Mat; R: Mat } {
  const r = m.A.shape[0];
  const A = readF32(c, m.A);
  const B = readF32(c, m.B);
  const L = zeros(m.out, r);
  for (let i = 0; i < L.data.length; i++) L.data[i] = m.scale * B[i];
  const R = zeros(m.in, r);
  for (let k = 0; k < r; k++) for (let j = 0; j < m.in; j++) R.data[j * r + k] = A[k * m.in + j];
  return { L, R };
}

/** Refuses what is not a sum of plain LoRA deltas: DoRA rescales W + ΔW, so a smaller B·A alone would not be its best approximation. */
export function assertPlainLora(a: FactorAdapter): void {
  const dora = a.layout.modules.find((m) => m.magnitude);
  if (dora) throw new LensError(a.checkpoint.path, 'DoRA adapter (lora_magnitude_vector): its delta is not s·B@A alone, so it has no exact low-rank form to work on', dora.magnitude!.name);
}

/** Checks --rank / --energy: exactly one, a positive integer rank, an energy in (0, 1]. */
export function rankOrEnergy(command: string, rank: number | undefined, energy: number | undefined): void {
  const usage = (msg: string): never => {
    throw new LensError(`lora-lens ${command}`, msg);
  };
  if ((rank === undefined) === (energy === undefined)) usage('give exactly one of --rank R and --energy E');
  if (rank !== undefined && !(Number.isInteger(rank) && rank >= 1)) usage(`--rank must be a positive integer (got ${rank})`);
  if (energy !== undefined && !(energy > 0 && energy <= 1)) usage(`--energy must be a fraction in (0, 1] (got ${energy})`);
}
