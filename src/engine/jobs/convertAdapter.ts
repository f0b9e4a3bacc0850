/**
 * convert of an adapter that is not a plain PEFT folder into a PEFT adapter folder whose fp32 merge
 * equals the original's:
 * - kohya-ss, LyCORIS and diffusers files: the same factor tensors, bytes as stored, under PEFT's keys
 *   (`base_model.model.<module path in the base>.lora_A.weight` / `lora_B`, LoHa `hada_w1_a`…, LoKr
 *   `lokr_w1`…). kohya module names are resolved against `--base`; the module paths written are the
 *   base's own (`unet.down_blocks.0…` in a diffusers folder), which is PEFT's and diffusers' naming.
 * - mlx-lm, AdaLoRA, VeRA and old PEFT MergedLinear folders (and any low-rank form that is not PEFT's
 *   plain pair, as LoCon's Tucker core): a PEFT LoRA whose fp32 factors are the ones the merge multiplies
 *   (deltaRule.ts FactorForm, formed by tensors/delta.ts `prepare`): mlx-lm's transposed, AdaLoRA's
 *   A ⊙ E, VeRA's λ-scaled slices of the shared matrices, MergedLinear's block-diagonal B with zero rows
 *   for the disabled slices (rank r · enabled slices).
 * r and alpha are set per module (rank_pattern / alpha_pattern) so that PEFT's fp32 scale f(alpha / r)
 * is the original's f(scale): the delta f(f(B @ A) · f(s)) is then the same bits. AdaLoRA is the one
 * exception: PEFT rounds its delta three times (times alpha, then divided by ranknum + 1e-5), which no
 * single LoRA scale reproduces, so its converted delta can differ by one ulp (test/unit/convert-peft).
 */
import { adapterLayout, Replacement } from '../checkpoint/adapter';
import { AdapterConfig } from '../checkpoint/adapterConfig';
import { Checkpoint, closeCheckpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { AdaptedModule, ruleName, statedRank } from '../checkpoint/deltaRule';
import { diffusionFormat } from '../checkpoint/diffusionAdapter';
import { LensError } from '../errors';
import { factorShapes } from '../lowrank/peftOut';
import { Dtype } from '../../shared/safetensors/dtypes';
import { TensorInfo } from '../../shared/safetensors/header';
import { SafetensorsWriter, writeFileAtomic } from '../safetensors/writer';
import { Factors } from '../tensors/delta';
import { JobContext, throwIfCancelled } from '../util/job';
import { mostFrequent } from '../util/mostFrequent';
import { withOutputDir } from '../util/outputDir';
import type { AdapterConvertReport } from '../../shared/jobs/reports/convert';
export type { AdapterConvertReport };

const PEFT_TYPE: Record<string, 'LORA' | 'LOHA' | 'LOKR'> = { 'low-rank': 'LORA', hadamard: 'LOHA', kronecker: 'LOKR' };

/** The adapter folders convert writes as a PEFT LoRA (a PEFT LoRA, LoHa, LoKr or IA³ folder is one already). */
const TO_LORA = new Set(['MLX', 'ADALORA', 'VERA']);

/**
 * Whether `convert` should write this input as a PEFT adapter folder: a kohya / LyCORIS / diffusers file,
 * or an mlx-lm, AdaLoRA, VeRA or old-MergedLinear folder.
 */
export function isConvertibleAdapter(p: string): boolean {
  let c: Checkpoint | undefined;
  try {
    c = openCheckpoint(p);
    if (c.kind !== 'adapter') return diffusionFormat(c) !== undefined;
    return TO_LORA.has(c.adapter!.method) || (c.adapter!.method === 'LORA' && c.adapter!.enableLora !== null);
  } catch {
    return false;
  } finally {
    if (c) closeCheckpoint(c);
  }
}

/** One tensor of the output: its key, dtype, shape, and its bytes (read when written, one at a time). */
interface Entry {
  name: string;
  dtype: Dtype;
  shape: number[];
  bytes: () => Uint8Array;
}

/** PEFT's tensor keys for one module, the stored tensors copied, or the fp32 factors its merge multiplies. */
function peftTensors(adapter: Checkpoint, factors: Factors, m: AdaptedModule): Entry[] {
  const k = (role: string): string => `base_model.model.${m.module}.${role}`;
  const stored = (name: string, t: TensorInfo): Entry => ({
    name,
    dtype: t.dtype,
    shape: t.shape,
    bytes: () => adapter.handles.readBytesSync(t, new Uint8Array(t.byteLength)),
  });
  const f32 = (name: string, shape: number[], v: () => Float32Array): Entry => ({ name, dtype: 'F32', shape, bytes: () => new Uint8Array(v().buffer.slice(0)) });
  const r = m.rule;
  // LyCORIS's weight decomposition (per input channel, with eps) is not PEFT's DoRA.
  if (m.decompose) throw new LensError(m.decompose.magnitude.file, `${ruleName(m)} (LyCORIS dora_scale) has no PEFT equivalent to convert to`, m.decompose.magnitude.name);
  switch (r.kind) {
    case 'low-rank': {
      const magnitude = r.magnitude ? [stored(k('lora_magnitude_vector'), r.magnitude)] : [];
      if (r.factors.form === 'plain' && !m.embedding) return [stored(k('lora_A.weight'), r.factors.A), stored(k('lora_B.weight'), r.factors.B), ...magnitude];
      if (m.embedding) break;
      // On a convolution, PEFT's Conv2d LoRA shapes (A a kh×kw kernel over the base's in·kh·kw columns, B 1×1).
      const kernel = m.base?.shape.length === 4 ? m.base.shape.slice(2) : undefined;
      const shapes = factorShapes({ module: m.module, embedding: false, out: m.out, in: m.in, rank: r.rank, kernel });
      return [f32(k('lora_A.weight'), shapes.A, () => factors.get(m).A), f32(k('lora_B.weight'), shapes.B, () => factors.get(m).B), ...magnitude];
    }
    case 'hadamard':
      // PEFT's LoHa reader here refuses Tucker cores (adapterKeys.ts): a converted file would not load.
      if (r.t1) break;
      return [stored(k('hada_w1_a'), r.w1a), stored(k('hada_w1_b'), r.w1b), stored(k('hada_w2_a'), r.w2a), stored(k('hada_w2_b'), r.w2b)];
    case 'kronecker': {
      if (r.row0 !== undefined) {
        throw new LensError(
          m.tensors[0].file,
          `module ${m.module} is rows ${r.row0}..${r.row0 + m.out} of a LoKr on a fused FLUX projection, which no PEFT LoKr holds: convert against the BFL single file, where the module is whole`,
          m.tensors[0].name,
        );
      }
      if ('t' in r.w2 && r.w2.t) break;
      const factor = (n: 1 | 2, f: typeof r.w1): Entry[] => ('full' in f ? [stored(k(`lokr_w${n}`), f.full)] : [stored(k(`lokr_w${n}_a`), f.a), stored(k(`lokr_w${n}_b`), f.b)]);
      return [...factor(1, r.w1), ...factor(2, r.w2)];
    }
    default:
      break;
  }
  throw new LensError(m.tensors[0].file, `${ruleName(m)} has no PEFT equivalent to convert to`, m.tensors[0].name);
}

/** The rank PEFT divides alpha by for a module: the stated rank, 1 for a LoKr with both factors whole. */
const peftRank = (m: AdaptedModule): number => statedRank(m) ?? 1;

/** The scale the merge multiplies a module's delta by (AdaLoRA: alpha / divisor, see deltaRule.ts). */
function scaleOf(m: AdaptedModule): number {
  return m.rule.kind === 'low-rank' || m.rule.kind === 'hadamard' || m.rule.kind === 'kronecker' ? m.rule.scale : 1;
}

/**
 * An alpha for which PEFT's scale alpha / rank (a Python float, which torch rounds to fp32) rounds as
 * `scale` does: scale · rank, or a neighbour of it where that quotient rounds elsewhere.
 */
export function alphaFor(scale: number, rank: number): number {
  const want = Math.fround(scale);
  const a = scale * rank;
  const step = Math.max(Math.abs(a) * 2 ** -52, Number.MIN_VALUE);
  for (let i = 0; i <= 64; i++) {
    for (const c of [a + i * step, a - i * step]) if (Math.fround(c / rank) === want) return c;
  }
  return a;
}

/** The config fields a converted PEFT folder carries over from an adapter folder's own config. */
function carried(cfg: AdapterConfig | undefined): Record<string, unknown> {
  if (!cfg) return { base_model_name_or_path: null, task_type: null, fan_in_fan_out: false, modules_to_save: null };
  return {
    base_model_name_or_path: cfg.baseModel,
    task_type: cfg.taskType,
    fan_in_fan_out: cfg.fanInFanOut,
    modules_to_save: cfg.modulesToSave.length ? cfg.modulesToSave : null,
  };
}

/** Converts the adapter `input` (kohya, LyCORIS, diffusers, mlx-lm...) to a PEFT folder `out`; `base` resolves kohya and VeRA names. */
export interface ConvertAdapterOptions {
  input: string;
  out: string;
  base?: string;
}

export async function convertAdapterJob(opts: ConvertAdapterOptions, ctx: JobContext): Promise<AdapterConvertReport> {
  const { input: inPath, out, base: basePath } = opts;
  const t0 = performance.now();
  const adapter = openCheckpoint(inPath);
  const base = basePath === undefined ? undefined : openCheckpoint(basePath);
  try {
    const cfg = adapter.adapter;
    const format = cfg ? cfg.method : diffusionFormat(adapter)!;
    if (format === 'kohya' && !base) throw new LensError(inPath, 'kohya module names are module paths with . written as _: give --base so they resolve against its tensor names');
    // VeRA's modules take the first `in` columns of the shared vera_A: only the base says how many.
    if (format === 'VERA' && !base) throw new LensError(inPath, "VeRA modules use the first in-features columns of the shared vera_A, which only the base knows: give --base");
    const layout = adapterLayout(adapter, base);
    const fused = layout.modules.find((m) => m.rule.kind === 'stacked');
    if (fused) {
      throw new LensError(inPath, `some of its modules are row blocks of the base's fused tensor ${fused.base!.name}, which PEFT cannot target one by one: convert against the base in the diffusers layout`);
    }
    const modules = layout.modules.filter((m) => peftRank(m) > 0);
    const kinds = [...new Set(modules.map((m) => m.rule.kind))];
    if (kinds.length !== 1 || PEFT_TYPE[kinds[0]] === undefined) {
      throw new LensError(inPath, `holds ${[...new Set(modules.map(ruleName))].join(' + ')} modules; one PEFT adapter holds one method (LoRA, LoHa or LoKr)`);
    }
    const peftType = PEFT_TYPE[kinds[0]];
    const dora = modules.filter((m) => m.rule.kind === 'low-rank' && m.rule.magnitude).length;
    if (dora > 0 && dora < modules.length) throw new LensError(inPath, `${dora} of ${modules.length} modules are DoRA; a PEFT adapter is DoRA (use_dora) for all its modules or none`);
    for (const w of layout.warnings) ctx.warn(w);
    if (modules.length < layout.modules.length) ctx.warn(`${layout.modules.length - modules.length} module(s) of rank 0 (pruned by AdaLoRA) change nothing and are left out`);
    if (format === 'ADALORA') ctx.warn("AdaLoRA's delta is rounded three times by PEFT (times alpha, divided by ranknum + 1e-5); as one LoRA scale it can differ by one ulp");

    const ranks = modules.map(peftRank);
    const alphas = modules.map((m, i) => alphaFor(scaleOf(m), ranks[i]));
    const r = mostFrequent(ranks);
    const alpha = mostFrequent(alphas);
    const rankPattern: Record<string, number> = {};
    const alphaPattern: Record<string, number> = {};
    modules.forEach((m, i) => {
      if (ranks[i] !== r) rankPattern[m.module] = ranks[i];
      if (alphas[i] !== alpha) alphaPattern[m.module] = alphas[i];
    });
    const config: Record<string, unknown> = {
      peft_type: peftType,
      ...carried(cfg),
      r,
      [peftType === 'LORA' ? 'lora_alpha' : 'alpha']: alpha,
      rank_pattern: rankPattern,
      alpha_pattern: alphaPattern,
      target_modules: modules.map((m) => m.module),
      bias: 'none',
      use_rslora: false,
      use_dora: dora > 0,
      inference_mode: true,
    };
    const factors = new Factors(adapter);
    // Saved tensors (modules_to_save, heads) go over under their own keys, which PEFT reads as they are.
    const saved = (rep: Replacement): Entry => ({
      name: rep.source.name,
      dtype: rep.source.dtype,
      shape: rep.source.shape,
      bytes: () => adapter.handles.readBytesSync(rep.source, new Uint8Array(rep.source.byteLength)),
    });
    const entries = [...modules.flatMap((m) => peftTensors(adapter, factors, m)), ...layout.replacements.map(saved)];
    return await withOutputDir('convert', out, [inPath, ...(basePath ? [basePath] : [])], async (dir) => {
      const writer = new SafetensorsWriter(dir.file('adapter_model.safetensors'), entries.map(({ name, dtype, shape }) => ({ name, dtype, shape })), { format: 'pt' });
      let bytes = 0;
      try {
        for (const [i, e] of entries.entries()) {
          throwIfCancelled(ctx);
          const data = e.bytes();
          await writer.writePartAsync(e.name, data);
          bytes += data.byteLength;
          ctx.progress({ phase: 'convert', done: i + 1, total: entries.length, bytes, tensor: e.name });
        }
        await writer.finishAsync();
      } catch (e) {
        await writer.abortAsync();
        throw e;
      }
      writeFileAtomic(dir.file('adapter_config.json'), JSON.stringify(config, null, 2) + '\n');
      return {
        in: inPath,
        out,
        from: cfg ? ({ MLX: 'mlx-lm', ADALORA: 'AdaLoRA', VERA: 'VeRA' } as Record<string, string>)[cfg.method] ?? 'MergedLinear' : format,
        peftType,
        modules: modules.length,
        files: ['adapter_config.json', 'adapter_model.safetensors'],
        tensors: entries.length,
        bytes,
        seconds: (performance.now() - t0) / 1000,
      };
    });
  } finally {
    closeCheckpoint(adapter);
    if (base) closeCheckpoint(base);
  }
}
