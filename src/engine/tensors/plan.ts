/**
 * What an adapter does to each tensor of its base: a delta rule (deltaRule.ts), a full replacement
 * (modules_to_save, saved biases), or nothing. Shared by merge, compare, precision and validate.
 */
import { adapterLayout, Replacement } from '../checkpoint/adapter';
import { AdaptedModule } from '../checkpoint/deltaRule';
import { Checkpoint, openCheckpoint } from '../checkpoint/checkpoint';
import { diffusionFormat } from '../checkpoint/diffusionAdapter';
import { LensError } from '../errors';
import { isFloatDtype } from '../../shared/safetensors/dtypes';
import { TensorInfo } from '../../shared/safetensors/header';
import { JobContext } from '../util/job';

export interface AdapterPlan {
  base: Checkpoint;
  adapter: Checkpoint;
  modules: AdaptedModule[];
  /** Base tensor name -> the adapter module whose delta rule applies to it. */
  loraByBase: Map<string, AdaptedModule>;
  /** Base tensor name -> the adapter tensor that replaces it. */
  replaceByBase: Map<string, Replacement>;
  /**
   * LoRA-adapted tensors whose base weight the adapter also saves (PEFT saves a targeted embedding
   * layer's weight, `…embed_tokens.base_layer.weight`): PEFT loads it over the base, then adds the delta.
   */
  loraBaseOverride: Map<string, TensorInfo>;
  /** Adapter tensors the base lacks (a new task head): a merge adds them. */
  added: Replacement[];
  warnings: string[];
}

/** Opens base and adapter and fits the adapter to the base; every mismatch is a LensError. */
export function planAdapter(basePath: string, adapterPath: string, ctx: JobContext): AdapterPlan {
  const base = openCheckpoint(basePath);
  if (base.kind === 'adapter') throw new LensError(basePath, 'this is a PEFT adapter folder; --base needs the base model');
  const adapter = openCheckpoint(adapterPath);
  if (adapter.kind !== 'adapter' && diffusionFormat(adapter) === undefined) {
    throw new LensError(adapterPath, 'not an adapter: no adapter_config.json, and not a kohya, LyCORIS or diffusers LoRA file');
  }
  const layout = adapterLayout(adapter, base);
  const loraByBase = new Map<string, AdaptedModule>();
  for (const m of layout.modules) {
    const t = m.base!;
    if (!isFloatDtype(t.dtype)) throw new LensError(t.file, `LoRA targets a ${t.dtype} tensor; only floating-point weights can take a delta`, t.name);
    if (loraByBase.has(t.name)) throw new LensError(adapter.path, `two LoRA modules target the same base tensor`, t.name);
    loraByBase.set(t.name, m);
  }
  const replaceByBase = new Map<string, Replacement>();
  const added: Replacement[] = [];
  const loraBaseOverride = new Map<string, TensorInfo>();
  for (const r of layout.replacements) {
    if (!isFloatDtype(r.source.dtype)) throw new LensError(r.source.file, `saved tensor has dtype ${r.source.dtype}; only floating-point tensors can be merged`, r.source.name);
    if (r.base === undefined) added.push(r);
    else if (loraByBase.has(r.base.name)) loraBaseOverride.set(r.base.name, r.source);
    else replaceByBase.set(r.base.name, r);
  }
  for (const w of layout.warnings) ctx.warn(w);
  return { base, adapter, modules: layout.modules, loraByBase, loraBaseOverride, replaceByBase, added, warnings: layout.warnings };
}

export function closePlan(p: AdapterPlan): void {
  p.base.handles.close();
  p.adapter.handles.close();
}
