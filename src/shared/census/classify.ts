/**
 * Architecture-aware naming of checkpoint tensors from their names alone: which layer, which part of
 * the block (attention, MLP, norm), which projection. Works for model tensors and for PEFT adapter
 * tensors (classified as the module they adapt).
 */

import { classifyDiffusion } from './diffusion';

/** The six categories of language models, then those of image models (UNet resnets, time embedding, VAE). */
export type Category = 'attention' | 'mlp' | 'norm' | 'embedding' | 'final_norm' | 'other' | 'resnet' | 'time_embedding' | 'vae';
export const CATEGORIES: readonly Category[] = ['attention', 'mlp', 'norm', 'embedding', 'final_norm', 'other', 'resnet', 'time_embedding', 'vae'];

export interface TensorClass {
  category: Category;
  /** Index of the transformer block, null outside the blocks (and in image models: see `block`). */
  layer: number | null;
  /** The projection inside attention or MLP (`q_proj`, `c_attn`, `query_key_value`, `output.dense`), else null. */
  projection: string | null;
  /** Image models: the pipeline component (`unet`, `text_encoder_2`, `transformer`, `vae`). */
  component?: string;
  /** Image models: the block (`down.1`, `mid`, `up.2`, `double.7`, `single.12`, `layers.3`), null outside blocks. */
  block?: string | null;
}

/** The module list of the blocks: `model.layers.N`, GPT-2's `h.N`, BERT's `encoder.layer.N`, `blocks.N`. */
const LAYER = /(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)/;
const ATTENTION = new Set(['self_attn', 'attn', 'attention', 'self_attention', 'cross_attn']);
const MLP = new Set(['mlp', 'ffn', 'feed_forward', 'intermediate', 'block_sparse_moe']);
const EMBEDDINGS = new Set([
  'embed_tokens',
  'wte',
  'wpe',
  'embed_in',
  'word_embeddings',
  'position_embeddings',
  'token_type_embeddings',
  'embed_positions',
  'lm_head',
  'embed_out',
  'vocab_projector',
]);
const FINAL_NORMS = new Set(['norm', 'ln_f', 'final_layer_norm', 'final_layernorm', 'final_norm']);
const NORM = /(norm|^ln_?\d*$|^ln_f$|LayerNorm)/i;

/** PEFT's wrapper prefix and LoRA parameter suffixes, removed so an adapter tensor names its module. */
const PEFT_PREFIX = /^base_model\.model\./;
const PEFT_SUFFIX = /\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector)(\.[^.]+)?(\.weight)?$/;

/** The module a tensor belongs to: its name without the parameter (`.weight`, `.bias`) or LoRA suffix. */
export function moduleOf(name: string): string {
  const n = name.replace(PEFT_PREFIX, '').replace(/\.modules_to_save\.[^.]+\./, '.').replace(/\.base_layer\./, '.');
  if (PEFT_SUFFIX.test(n)) return n.replace(PEFT_SUFFIX, '');
  return n.replace(/\.(weight|bias)$/, '');
}

export function classifyTensor(name: string): TensorClass {
  const diffusion = classifyDiffusion(name);
  if (diffusion) return diffusion;
  const module = moduleOf(name);
  const parts = module.split('.');
  const last = parts[parts.length - 1];
  const m = LAYER.exec(module);
  const layer = m ? Number(m[1]) : null;

  if (EMBEDDINGS.has(last)) return { category: 'embedding', layer, projection: null };
  if (NORM.test(last)) {
    if (layer === null && FINAL_NORMS.has(last)) return { category: 'final_norm', layer, projection: null };
    return { category: 'norm', layer, projection: null };
  }
  if (layer === null) return { category: 'other', layer, projection: null };

  // Inside a block: the first container segment after the layer index decides attention or MLP.
  const inner = module.slice(m!.index + m![0].length).split('.').filter((s) => s !== '');
  const container = inner.findIndex((s) => ATTENTION.has(s) || MLP.has(s));
  let category: Category;
  if (container >= 0) category = ATTENTION.has(inner[container]) ? 'attention' : 'mlp';
  // BERT's block MLP ends in `output.dense` beside `attention` and `intermediate`.
  else if (inner[0] === 'output') category = 'mlp';
  else return { category: 'other', layer, projection: null };
  if (container === inner.length - 1) return { category, layer, projection: null };
  // `dense` alone is ambiguous (BERT's attention.output.dense, intermediate.dense, output.dense): keep its parent.
  const projection = last === 'dense' ? inner.slice(-2).join('.') : last;
  return { category, layer, projection };
}
