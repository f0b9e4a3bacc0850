/**
 * convert of an image-model adapter file (kohya-ss, LyCORIS, diffusers) into a PEFT adapter folder whose
 * fp32 merge equals the original's: the same factor tensors, bytes as stored, under PEFT's keys
 * (`base_model.model.<module path in the base>.lora_A.weight` / `lora_B`, LoHa `hada_w1_a`…, LoKr
 * `lokr_w1`…), with r and alpha per module (rank_pattern / alpha_pattern) so that PEFT's alpha / r is the
 * original's scale. kohya module names are resolved against `--base`; the module paths written are the
 * base's own (`unet.down_blocks.0…` in a diffusers folder), which is PEFT's and diffusers' naming.
 */
import { adapterLayout } from '../checkpoint/adapter';
import { Checkpoint, closeCheckpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { AdaptedModule, ruleName } from '../checkpoint/deltaRule';
import { diffusionFormat } from '../checkpoint/diffusionAdapter';
import { LensError } from '../errors';
import { TensorInfo } from '../../shared/safetensors/header';
import { SafetensorsWriter, writeFileAtomic } from '../safetensors/writer';
import { JobContext, throwIfCancelled } from '../util/job';
import { withOutputDir } from '../util/outputDir';
import type { AdapterConvertReport } from '../../shared/jobs/reports/convert';
export type { AdapterConvertReport };

const PEFT_TYPE: Record<string, 'LORA' | 'LOHA' | 'LOKR'> = { 'low-rank': 'LORA', hadamard: 'LOHA', kronecker: 'LOKR' };

/** Whether `convert` should treat this input as an image-model adapter file. */
export function isDiffusionAdapter(p: string): boolean {
  let c: Checkpoint | undefined;
  try {
    c = openCheckpoint(p);
    return c.kind !== 'adapter' && diffusionFormat(c) !== undefined;
  } catch {
    return false;
  } finally {
    if (c) closeCheckpoint(c);
  }
}

/** PEFT's tensor keys and the adapter tensors they hold, for one module. */
function peftTensors(m: AdaptedModule): Array<[string, TensorInfo]> {
  const k = (role: string): string => `base_model.model.${m.module}.${role}`;
  const r = m.rule;
  // LyCORIS's weight decomposition (per input channel, with eps) is not PEFT's DoRA.
  if (m.decompose) throw new LensError(m.decompose.magnitude.file, `${ruleName(m)} (LyCORIS dora_scale) has no PEFT equivalent to convert to`, m.decompose.magnitude.name);
  switch (r.kind) {
    case 'low-rank':
      if (r.factors.form !== 'plain' || r.magnitude) break;
      return [
        [k('lora_A.weight'), r.factors.A],
        [k('lora_B.weight'), r.factors.B],
      ];
    case 'hadamard':
      // PEFT's LoHa reader here refuses Tucker cores (adapterKeys.ts): a converted file would not load.
      if (r.t1) break;
      return [
        [k('hada_w1_a'), r.w1a],
        [k('hada_w1_b'), r.w1b],
        [k('hada_w2_a'), r.w2a],
        [k('hada_w2_b'), r.w2b],
      ];
    case 'kronecker': {
      if ('t' in r.w2 && r.w2.t) break;
      const factor = (n: 1 | 2, f: typeof r.w1): Array<[string, TensorInfo]> =>
        'full' in f
          ? [[k(`lokr_w${n}`), f.full]]
          : [
              [k(`lokr_w${n}_a`), f.a],
              [k(`lokr_w${n}_b`), f.b],
            ];
      return [...factor(1, r.w1), ...factor(2, r.w2)];
    }
    default:
      break;
  }
  throw new LensError(m.tensors[0].file, `${ruleName(m)} has no PEFT equivalent to convert to`, m.tensors[0].name);
}

/** The rank PEFT divides alpha by for a module: the factors' inner dimension (1 for a LoKr with both factors whole). */
function rankOf(m: AdaptedModule): number {
  const r = m.rule;
  if (r.kind === 'low-rank') return r.rank;
  if (r.kind === 'hadamard') return r.w1b.shape[0];
  if (r.kind === 'kronecker') return 'b' in r.w1 ? r.w1.b.shape[0] : 'b' in r.w2 ? r.w2.b.shape[0] : 1;
  return 1;
}

/** The most frequent value of a list (the config's default; the rest go to the patterns). */
function mode(values: number[]): number {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  return [...counts].sort((a, b) => b[1] - a[1] || a[0] - b[0])[0][0];
}

export async function convertDiffusionAdapter(inPath: string, out: string, basePath: string | undefined, ctx: JobContext): Promise<AdapterConvertReport> {
  const t0 = performance.now();
  const adapter = openCheckpoint(inPath);
  const base = basePath === undefined ? undefined : openCheckpoint(basePath);
  try {
    const format = diffusionFormat(adapter)!;
    if (format === 'kohya' && !base) throw new LensError(inPath, 'kohya module names are module paths with . written as _: give --base so they resolve against its tensor names');
    const { modules } = adapterLayout(adapter, base);
    const kinds = [...new Set(modules.map((m) => m.rule.kind))];
    if (kinds.length !== 1 || PEFT_TYPE[kinds[0]] === undefined) {
      throw new LensError(inPath, `holds ${[...new Set(modules.map(ruleName))].join(' + ')} modules; one PEFT adapter holds one method (LoRA, LoHa or LoKr)`);
    }
    const peftType = PEFT_TYPE[kinds[0]];
    const ranks = modules.map(rankOf);
    // alpha such that PEFT's alpha / r is the original scale (kohya: alpha / rank, or 1 without alpha).
    const alphas = modules.map((m, i) => m.rule.kind !== 'dense' && m.rule.kind !== 'scale' ? m.rule.scale * ranks[i] : 1);
    const r = mode(ranks);
    const alpha = mode(alphas);
    const rankPattern: Record<string, number> = {};
    const alphaPattern: Record<string, number> = {};
    modules.forEach((m, i) => {
      if (ranks[i] !== r) rankPattern[m.module] = ranks[i];
      if (alphas[i] !== alpha) alphaPattern[m.module] = alphas[i];
    });
    const config: Record<string, unknown> = {
      peft_type: peftType,
      base_model_name_or_path: null,
      task_type: null,
      r,
      [peftType === 'LORA' ? 'lora_alpha' : 'alpha']: alpha,
      rank_pattern: rankPattern,
      alpha_pattern: alphaPattern,
      target_modules: modules.map((m) => m.module),
      bias: 'none',
      fan_in_fan_out: false,
      use_rslora: false,
      use_dora: false,
      modules_to_save: null,
      inference_mode: true,
    };
    const entries = modules.flatMap(peftTensors);
    return await withOutputDir('convert', out, [inPath, ...(basePath ? [basePath] : [])], async (dir) => {
      const writer = new SafetensorsWriter(dir.file('adapter_model.safetensors'), entries.map(([name, t]) => ({ name, dtype: t.dtype, shape: t.shape })), { format: 'pt' });
      let bytes = 0;
      try {
        for (const [i, [name, t]] of entries.entries()) {
          throwIfCancelled(ctx);
          const data = await adapter.handles.readBytes(t, new Uint8Array(t.byteLength));
          await writer.writePartAsync(name, data);
          bytes += data.byteLength;
          ctx.progress({ phase: 'convert', done: i + 1, total: entries.length, bytes, tensor: name });
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
        from: format,
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
