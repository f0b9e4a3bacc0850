/**
 * estimate --adapter for an image-model adapter file (kohya-ss, LyCORIS, diffusers): its modules resolved
 * against the base's real shapes, and each module's trainable elements as its method holds them (LoRA
 * r · (in·kh·kw + out), LoHa twice that plus Tucker cores, LoKr its two factors, DoRA's dora_scale, a full
 * diff, an (IA)³ vector). Factors a fused FLUX projection shares between its split modules count once.
 */
import { adapterLayout } from '../checkpoint/adapter';
import { Checkpoint, closeCheckpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { seenBefore, statedRank } from '../checkpoint/deltaRule';
import { diffusionFormat } from '../checkpoint/diffusionAdapter';
import { formatInt } from '../../shared/format';
import { LensError } from '../errors';
import { JobContext } from '../util/job';
import { mostFrequent } from '../util/mostFrequent';
import { EstimateModule, EstimateReport } from '../../shared/jobs/reports/estimate';

/** Whether `p` is an image-model adapter file (no adapter_config.json; the format read from its keys). */
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

/** Scalars that configure a module and are not trained: kohya's alpha, LyCORIS's on_input flag. */
const CONFIG_SCALAR = /\.(alpha|on_input)$/;

export function estimateDiffusion(basePath: string, adapterPath: string, ctx: JobContext): EstimateReport {
  const adapter = openCheckpoint(adapterPath);
  try {
    const base = openCheckpoint(basePath);
    try {
      if (base.kind === 'adapter') throw new LensError(basePath, 'is an adapter; give the base model and the adapter with --adapter');
      const layout = adapterLayout(adapter, base);
      const counted = new Set<string>();
      const modules: EstimateModule[] = [];
      let doraParams = 0;
      // A fused base tensor's stacked parts (q, k, v in OpenCLIP's in_proj) are modules of their own.
      for (const m of layout.modules.flatMap((x) => (x.rule.kind === 'stacked' ? x.rule.parts.map((p) => p.module) : [x]))) {
        let params = 0;
        for (const t of m.tensors) {
          if (CONFIG_SCALAR.test(t.name) || t === m.decompose?.magnitude || seenBefore(t, counted)) continue;
          params += t.numel;
        }
        const dora = m.decompose?.magnitude.numel ?? 0;
        doraParams += dora;
        const r = statedRank(m) ?? 0;
        const scale = m.rule.kind === 'scale' || m.rule.kind === 'stacked' ? 1 : m.rule.scale;
        modules.push({ name: m.module, in: m.in, out: m.out, r, alpha: scale * r, params: params + dora });
      }
      const loraParams = modules.reduce((a, m) => a + m.params, 0) - doraParams;
      const trainableParams = loraParams + doraParams;
      const baseParams = base.tensors.reduce((a, t) => a + t.numel, 0);
      const adapterFileParams = adapter.tensors.filter((t) => !CONFIG_SCALAR.test(t.name)).reduce((a, t) => a + t.numel, 0);
      const warnings = [...layout.warnings];
      if (adapterFileParams !== trainableParams) {
        warnings.push(`the adapter's weights hold ${formatInt(adapterFileParams)} trained elements, not the ${formatInt(trainableParams)} its modules on this base use`);
      }
      for (const w of warnings) ctx.warn(w);
      return {
        model: basePath,
        shapesFrom: 'weights',
        modelType: typeof base.config?.model_type === 'string' ? base.config.model_type : null,
        r: mostFrequent(modules.map((m) => m.r)),
        alpha: mostFrequent(modules.map((m) => m.alpha)),
        targets: [...new Set(modules.map((m) => m.name.split('.').pop()!))].sort(),
        useDora: doraParams > 0,
        trainableParams,
        loraParams,
        doraParams,
        savedParams: 0,
        baseParams,
        percent: baseParams > 0 ? (100 * trainableParams) / baseParams : 0,
        modules,
        modulesToSave: [],
        adapterFileParams,
        warnings,
      };
    } finally {
      closeCheckpoint(base);
    }
  } finally {
    closeCheckpoint(adapter);
  }
}
