/**
 * Which base tensors PEFT would put LoRA on, from a LoraConfig's target rules and the tensors' names
 * and shapes alone (for an adapter_config.json without weights, or an estimate before training).
 */
import { AdapterConfig, isTargetModule } from '../checkpoint/adapterConfig';
import { LensError } from '../errors';
import { defaultTargetModules } from './architectures';
import { classifyTensor } from '../../shared/census/classify';

export type TargetRules = Pick<AdapterConfig, 'targetModules' | 'layersToTransform' | 'layersPattern'>;

/** Output heads: Linear layers named like embeddings, left out by PEFT's 'all-linear'. */
const OUTPUT_HEADS = new Set(['lm_head', 'embed_out']);

/** An input embedding (LoRA on it is lora_embedding_A/B), as opposed to a Linear output head. */
export function isInputEmbedding(name: string): boolean {
  const module = name.replace(/\.weight$/, '');
  return classifyTensor(name).category === 'embedding' && !OUTPUT_HEADS.has(module.split('.').pop()!);
}

/**
 * A predicate over base tensors: true for the `.weight` of each module PEFT would wrap. A null
 * target_modules takes PEFT's default for the model type (`config.model_type`).
 */
export function loraTargetPredicate(
  rules: TargetRules,
  config: Record<string, unknown> | undefined,
  source: string,
): (name: string, shape: number[]) => boolean {
  let r = rules;
  if (r.targetModules === null) {
    const d = defaultTargetModules(config);
    if (d === undefined) throw new LensError(source, `target_modules is null and PEFT has no default targets for model type ${JSON.stringify(config?.model_type ?? null)}`);
    r = { ...r, targetModules: d };
  }
  const allLinear = r.targetModules === 'all-linear';
  return (name, shape) => {
    if (!name.endsWith('.weight') || shape.length !== 2) return false;
    const cat = classifyTensor(name).category;
    if (cat === 'norm' || cat === 'final_norm') return false;
    const module = name.slice(0, -'.weight'.length);
    if (allLinear && (cat === 'embedding' || OUTPUT_HEADS.has(module.split('.').pop()!))) return false;
    return isTargetModule(allLinear ? { ...r, targetModules: '.*' } : r, module);
  };
}
