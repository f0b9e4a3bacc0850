/**
 * Writing low-rank results as one LoRA file in the naming family of a kohya / LyCORIS / diffusers source,
 * so the tools that read the source read the result: kohya names get `<module>.lora_down.weight` [k, in],
 * `.lora_up.weight` [out, k] and `.alpha` = k (scale 1, so up·down is the delta), a convolution's as
 * [k, in, kh, kw] and [out, k, 1, 1] where the source states its kernel; diffusers names get
 * `<module>.lora.down.weight`, `.lora.up.weight` and `.alpha`. Whatever the source's method (LoRA, LoCon,
 * LoHa, LoKr, a full diff), a best rank-k approximation is an ordinary LoRA, so the file is one.
 * Tensors with no low-rank form pass through as they are (LyCORIS `diff_b`).
 */
import { DiffusionFormat } from '../checkpoint/diffusionAdapter';
import { Mat } from '../linalg/dense';
import { SafetensorsWriter } from '../safetensors/writer';
import { OutputDir } from '../util/outputDir';
import { factorArrays, factorShapes, OutModuleSpec, PassThrough } from './peftOut';

function keys(format: DiffusionFormat, module: string): { down: string; up: string; alpha: string } {
  return format === 'kohya'
    ? { down: `${module}.lora_down.weight`, up: `${module}.lora_up.weight`, alpha: `${module}.alpha` }
    : { down: `${module}.lora.down.weight`, up: `${module}.lora.up.weight`, alpha: `${module}.alpha` };
}

/**
 * The source's metadata with kohya's network fields stating what the file now is: a plain LoRA
 * (`networks.lora`, no LyCORIS `ss_network_args`), its rank, or "Dynamic" where ranks differ (as kohya's
 * own resize_lora.py writes it), alpha equal to the rank.
 */
function resizedMetadata(source: Record<string, string>, specs: OutModuleSpec[]): Record<string, string> {
  const ranks = new Set(specs.map((s) => s.rank));
  const dim = ranks.size === 1 ? String([...ranks][0]) : 'Dynamic';
  const meta: Record<string, string> = { ...source, format: 'pt' };
  delete meta.ss_network_args;
  if (Object.keys(source).some((k) => k.startsWith('ss_'))) Object.assign(meta, { ss_network_module: 'networks.lora', ss_network_dim: dim, ss_network_alpha: dim });
  return meta;
}

/** A streaming writer of one LoRA file `name` into `out`, modules in `specs` order, then the pass-through tensors. */
export class LoraFileWriter {
  private readonly writer: SafetensorsWriter;

  constructor(
    out: OutputDir,
    name: string,
    private readonly format: DiffusionFormat,
    specs: OutModuleSpec[],
    private readonly passThrough: PassThrough[],
    metadata: Record<string, string>,
  ) {
    const tensors = specs.flatMap((s) => {
      const k = keys(format, s.module);
      const shape = factorShapes(s);
      return [
        { name: k.down, dtype: 'F32' as const, shape: shape.A },
        { name: k.up, dtype: 'F32' as const, shape: shape.B },
        { name: k.alpha, dtype: 'F32' as const, shape: [] },
      ];
    });
    for (const p of passThrough) tensors.push({ name: p.name, dtype: p.dtype as 'F32', shape: p.shape });
    this.writer = new SafetensorsWriter(out.file(name), tensors, resizedMetadata(metadata, specs));
  }

  /** The next module: down = rightᵀ, up = left, alpha = k. */
  writeModule(spec: OutModuleSpec, left: Mat, right: Mat): void {
    const { A, B } = factorArrays(spec, left, right);
    const k = keys(this.format, spec.module);
    const bytes = (x: Float32Array): Uint8Array => new Uint8Array(x.buffer, x.byteOffset, x.byteLength);
    this.writer.write(k.down, bytes(A));
    this.writer.write(k.up, bytes(B));
    this.writer.write(k.alpha, bytes(new Float32Array([spec.rank])));
  }

  finish(): void {
    for (const p of this.passThrough) this.writer.write(p.name, p.bytes);
    this.writer.finish();
  }

  abort(): void {
    this.writer.abort();
  }
}
