/**
 * Task vectors read through a mask: an adapter (its delta `s * B @ A`, evaluated at the kept elements
 * only) or a fine-tuned / merged model folder (`f32(model) - f32(base)`, one module at a time).
 */
import { adapterLayout } from '../checkpoint/adapter';
import { AdaptedModule, wholeTensor } from '../checkpoint/deltaRule';
import { Checkpoint, closeCheckpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { LensError } from '../errors';
import { Kernels } from '../kernels/kernels';
import { assertFloat, bytesToF32, Scratch } from '../safetensors/reader';
import { JobContext, throwIfCancelled } from '../util/job';
import { assertLowRank, doraDelta, doraOf, doraValuesAt, loraNormSq, loraValuesAt, readFactors } from './lora';
import { Mask } from './maskFile';
import { MaskModule } from '../../shared/jobs/reports/mask';
import { SourceKind } from '../../shared/jobs/choices';


/** One module of the base, read at most once however many model sources need it. */
export class BaseModule {
  private value: Promise<Float32Array> | undefined;

  constructor(
    private readonly base: Checkpoint,
    readonly module: MaskModule,
    private readonly scratch: Scratch,
  ) {}

  f32(): Promise<Float32Array> {
    return (this.value ??= readInto(this.base, this.module.name, this.scratch, 'base'));
  }
}

async function readInto(c: Checkpoint, name: string, scratch: Scratch, slot: string): Promise<Float32Array> {
  const t = c.byName.get(name)!;
  assertFloat(t);
  const raw = await c.handles.readBytes(t, scratch.bytes(`${slot}-raw`, t.byteLength));
  return bytesToF32(t, raw, scratch.f32(`${slot}-f32`, t.numel));
}

export interface MaskedValues {
  /** Squared Frobenius norm of the whole task vector of the module (kept or not); NaN when not asked for. */
  fullNormSq: number;
  /** Whether the source changes this module at all. */
  touches: boolean;
  /**
   * Expected sum of squares, over the kept elements, of the error a model's storage rounding puts into
   * its task vector (ulp^2 / 12 per rounding: the model's own, and the base's cast to the model's dtype
   * where they differ, as a half-precision merge of a finer base does); 0 for an adapter.
   */
  roundingSq: number;
}

export interface MaskedSource {
  name: string;
  path: string;
  kind: SourceKind;
  /** Writes the task vector's kept elements of `base.module` (mask order) into `out`; `fullNorm` asks for fullNormSq too. */
  values(base: BaseModule, indices: Uint32Array, out: Float32Array, fullNorm: boolean): Promise<MaskedValues>;
  close(): void;
}

/** Opens `p` as a task vector for `mask`; `kind` 'auto' takes an adapter folder as an adapter and anything else as a model. */
export function openSource(
  p: string,
  name: string,
  kind: SourceKind | 'auto',
  base: Checkpoint,
  mask: Mask,
  kernels: Kernels,
  warn: (m: string) => void,
): MaskedSource {
  const ckpt = openCheckpoint(p);
  const actual: SourceKind = ckpt.kind === 'adapter' ? 'adapter' : 'finetuned';
  if (kind !== 'auto' && kind !== actual) {
    closeCheckpoint(ckpt);
    throw new LensError(p, kind === 'adapter' ? 'not a PEFT adapter folder (no adapter_config.json)' : 'is a PEFT adapter folder; pass it with --adapter');
  }
  try {
    return actual === 'adapter' ? adapterSource(ckpt, name, base, mask, kernels, warn) : modelSource(ckpt, name, base, mask, kernels);
  } catch (e) {
    closeCheckpoint(ckpt);
    throw e;
  }
}

function adapterSource(ckpt: Checkpoint, name: string, base: Checkpoint, mask: Mask, kernels: Kernels, warn: (m: string) => void): MaskedSource {
  const layout = adapterLayout(ckpt, base);
  for (const w of layout.warnings) warn(`${name}: ${w}`);
  const byBase = new Map<string, AdaptedModule>(layout.modules.map((lm) => [lm.base!.name, lm]));
  for (const lm of layout.modules) assertLowRank(ckpt, lm);
  const masked = new Set(mask.modules.map((m) => m.name));
  const outside = layout.modules.filter((lm) => !masked.has(lm.base!.name)).length;
  if (outside > 0) warn(`${name}: ${outside} of its ${layout.modules.length} modules are not in the mask; their deltas are left out`);
  if (layout.replacements.length > 0) warn(`${name}: ${layout.replacements.length} saved full tensors (modules_to_save, biases) are not LoRA deltas and are left out`);
  const scratch = new Scratch(kernels.sharedMemory);
  return {
    name,
    path: ckpt.path,
    kind: 'adapter',
    async values(bm, indices, out, fullNorm) {
      const lm = byBase.get(bm.module.name);
      if (!lm) {
        out.fill(0);
        return { fullNormSq: 0, touches: false, roundingSq: 0 };
      }
      const f = await readFactors(ckpt, lm);
      loraValuesAt(f, indices, out);
      let fullNormSq = NaN;
      if (wholeTensor(lm)) {
        // DoRA's norms span whole rows: the one case that expands the delta.
        const numel = bm.module.numel;
        const d = await kernels.loraDelta(f, scratch.f32('lora', numel));
        const dora = await doraOf(kernels, ckpt, lm, await bm.f32(), d);
        doraValuesAt(dora, indices, out);
        if (fullNorm) fullNormSq = (await kernels.pairStats(await doraDelta(kernels, dora, d, scratch.bytes('merged', 4 * numel), scratch.f32('tau', numel)), null)).aSq;
      } else if (fullNorm) fullNormSq = loraNormSq(f); // r^2 (in + out) products: as costly as the masked values, so only when asked
      if (out.some((v) => !Number.isFinite(v))) throw new LensError(ckpt.path, 'delta has non-finite values', lm.tensors[0].name);
      return { fullNormSq, touches: true, roundingSq: 0 };
    },
    close: () => closeCheckpoint(ckpt),
  };
}

function modelSource(ckpt: Checkpoint, name: string, base: Checkpoint, mask: Mask, kernels: Kernels): MaskedSource {
  for (const m of mask.modules) {
    const t = ckpt.byName.get(m.name);
    if (!t) throw new LensError(ckpt.path, `has no tensor '${m.name}', which the mask masks`, m.name);
    if (t.shape.join(',') !== m.shape.join(',')) throw new LensError(ckpt.path, `shape ${JSON.stringify(t.shape)} differs from the base's ${JSON.stringify(m.shape)}`, m.name);
    assertFloat(t);
  }
  const scratch = new Scratch(kernels.sharedMemory);
  return {
    name,
    path: ckpt.path,
    kind: 'finetuned',
    async values(bm, indices, out) {
      const w = await bm.f32();
      const t = ckpt.byName.get(bm.module.name)!;
      const ft = await readInto(ckpt, bm.module.name, scratch, 'model');
      const tau = await kernels.subtract(ft, w, scratch.f32('tau', w.length));
      const stats = await kernels.pairStats(tau, null);
      if (stats.nonFinite > 0) throw new LensError(ckpt.path, `${stats.nonFinite} non-finite values in the task vector (model minus base)`, bm.module.name);
      for (let i = 0; i < indices.length; i++) out[i] = tau[indices[i]];
      const roundings = t.dtype !== 'F32' && base.byName.get(bm.module.name)!.dtype !== t.dtype ? 2 : 1;
      let roundingSq = 0;
      for (let i = 0; i < indices.length; i++) roundingSq += ulp(t.dtype, ft[indices[i]]) ** 2;
      return { fullNormSq: stats.aSq, touches: stats.aNonzero > 0, roundingSq: (roundings * roundingSq) / 12 };
    },
    close: () => closeCheckpoint(ckpt),
  };
}

const f32bits = new Uint32Array(1);
const f32view = new Float32Array(f32bits.buffer);

/** The spacing of `dtype`'s values around x (x representable in fp32). */
export function ulp(dtype: string, x: number): number {
  f32view[0] = x;
  const e = Math.max(((f32bits[0] >>> 23) & 0xff) - 127, -126); // subnormals share the smallest normal's spacing
  switch (dtype) {
    case 'BF16':
      return 2 ** (e - 7);
    case 'F16':
      return 2 ** (Math.max(e, -14) - 10);
    case 'F64':
      return 2 ** (e - 52);
    default:
      return 2 ** (e - 23);
  }
}

/** Per-module mask and base, and the masked values of every source in turn: one module in memory at a time. */
export async function forEachMaskedModule(
  mask: Mask,
  base: Checkpoint,
  kernels: Kernels,
  sources: MaskedSource[],
  ctx: JobContext,
  phase: string,
  visit: (module: number, source: number, values: Float32Array, full: MaskedValues) => void,
  fullNorm = false,
): Promise<void> {
  // Shared memory on the CPU: the worker backend reads and writes it in place.
  const scratch = new Scratch(kernels.sharedMemory);
  const M = mask.modules.length;
  for (let i = 0; i < M; i++) {
    throwIfCancelled(ctx);
    const m = mask.modules[i];
    ctx.progress({ phase, done: i, total: M, tensor: m.name });
    const indices = await mask.indices(m);
    const bm = new BaseModule(base, m, scratch);
    for (let s = 0; s < sources.length; s++) {
      const values = new Float32Array(indices.length);
      visit(i, s, values, await sources[s].values(bm, indices, values, fullNorm));
    }
  }
  ctx.progress({ phase, done: M, total: M });
}
