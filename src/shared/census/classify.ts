/**
 * Architecture-aware naming of checkpoint tensors from their names alone: which layer, which part of
 * the block (attention, MLP, norm), which projection. Works for model tensors and for PEFT adapter
 * tensors (classified as the module they adapt).
 */

import { classifyDiffusion } from './diffusion';

/**
 * The six categories of language models, then those of image models (UNet resnets, time embedding, VAE)
 * and of encoder-decoder models (a decoder's attention over the encoder's output).
 */
export type Category = 'attention' | 'mlp' | 'norm' | 'embedding' | 'final_norm' | 'other' | 'resnet' | 'time_embedding' | 'vae' | 'cross_attention';
export const CATEGORIES: readonly Category[] = ['attention', 'mlp', 'norm', 'embedding', 'final_norm', 'other', 'resnet', 'time_embedding', 'vae', 'cross_attention'];

/** Which stack of an encoder-decoder (T5, BART, Whisper) or encoder-only model (BERT) a block belongs to. */
export type Stack = 'encoder' | 'decoder';

export interface TensorClass {
  category: Category;
  /** Index of the transformer block, null outside the blocks (and in image models: see `block`). */
  layer: number | null;
  /** The projection inside attention or MLP (`q_proj`, `c_attn`, `query_key_value`, `output.dense`), else null. */
  projection: string | null;
  /** The stack whose blocks hold the tensor (`encoder.block.N`, `decoder.layers.N`); layers count per stack. */
  stack?: Stack;
  /** Image models: the pipeline component (`unet`, `text_encoder_2`, `transformer`, `vae`). */
  component?: string;
  /** Image models: the block (`down.1`, `mid`, `up.2`, `double.7`, `single.12`, `layers.3`), null outside blocks. */
  block?: string | null;
}

/** The module list of the blocks: `model.layers.N`, GPT-2's `h.N`, BERT's `encoder.layer.N`, `blocks.N`. */
const LAYER = /(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)(?:\.|$)/;
const ATTENTION = new Set(['self_attn', 'attn', 'attention', 'self_attention', 'cross_attn', 'SelfAttention']);
/** A decoder's attention over the encoder: T5's EncDecAttention, BART's and Whisper's encoder_attn, BERT-decoder's crossattention. */
const CROSS_ATTENTION = new Set(['EncDecAttention', 'encoder_attn', 'crossattention']);
const MLP = new Set(['mlp', 'ffn', 'feed_forward', 'intermediate', 'block_sparse_moe', 'DenseReluDense']);
/** Feed-forward Linear layers that sit in the block itself (BART, Whisper, OPT: `layers.N.fc1`). */
const BLOCK_FFN = /^(fc\d|fc_in|fc_out)$/;
/** The stack segment right before the blocks: `encoder.block.N`, `model.decoder.layers.N`. */
const STACK = /(?:^|\.)(encoder|decoder)\.(?:layers|layer|block|blocks)\.\d+(?:\.|$)/;
/** A stack's own final norm: `encoder.final_layer_norm` (T5), `model.encoder.layer_norm` (Whisper). */
const STACK_FINAL_NORM = /(?:^|\.)(encoder|decoder)\.(final_layer_norm|layer_norm|layernorm|norm)$/;
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
  'shared',
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
  const st = STACK.exec(module);
  const stack = st ? { stack: st[1] as Stack } : {};

  if (EMBEDDINGS.has(last)) return { category: 'embedding', layer, projection: null, ...stack };
  if (NORM.test(last)) {
    const stackNorm = layer === null ? STACK_FINAL_NORM.exec(module) : null;
    if (stackNorm) return { category: 'final_norm', layer, projection: null, stack: stackNorm[1] as Stack };
    if (layer === null && FINAL_NORMS.has(last)) return { category: 'final_norm', layer, projection: null };
    return { category: 'norm', layer, projection: null, ...stack };
  }
  if (layer === null) return { category: 'other', layer, projection: null };

  // Inside a block: the first container segment after the layer index decides attention or MLP; T5
  // numbers the sub-layers of a block (`block.N.layer.1.DenseReluDense`), which are not blocks.
  let inner = module.slice(m!.index + m![0].length).split('.').filter((s) => s !== '');
  if (inner[0] === 'layer' && /^\d+$/.test(inner[1] ?? '')) inner = inner.slice(2);
  const container = inner.findIndex((s) => ATTENTION.has(s) || CROSS_ATTENTION.has(s) || MLP.has(s));
  let category: Category;
  if (container >= 0) category = CROSS_ATTENTION.has(inner[container]) ? 'cross_attention' : ATTENTION.has(inner[container]) ? 'attention' : 'mlp';
  // BERT's block MLP ends in `output.dense` beside `attention` and `intermediate`.
  else if (inner[0] === 'output') category = 'mlp';
  else if (inner.length === 1 && BLOCK_FFN.test(inner[0])) return { category: 'mlp', layer, projection: inner[0], ...stack };
  else return { category: 'other', layer, projection: null, ...stack };
  if (container === inner.length - 1) return { category, layer, projection: null, ...stack };
  // `dense` alone is ambiguous (BERT's attention.output.dense, intermediate.dense, output.dense): keep its parent.
  const projection = last === 'dense' ? inner.slice(-2).join('.') : last;
  return { category, layer, projection, ...stack };
}
