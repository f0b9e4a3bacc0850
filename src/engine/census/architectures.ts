/**
 * The exact tensors a Hugging Face model saves (`save_pretrained`, tied weights left out), computed from
 * its config.json alone: names, shapes and the config's dtype. Checked against transformers itself by
 * test/fixtures/layouts/generate.py.
 */
import { LensError } from '../errors';
import { Dtype } from '../../shared/safetensors/dtypes';
import { TensorSpec } from '../safetensors/writer';

/** What kind of module a tensor belongs to: LoRA wraps `linear`, `conv1d` and `embedding` modules. */
export type ModuleType = 'linear' | 'conv1d' | 'embedding' | 'norm';

export interface LayoutTensor extends TensorSpec {
  /** The module path (the name without `.weight` / `.bias`). */
  module: string;
  moduleType: ModuleType;
}

type Config = Record<string, unknown>;

const TORCH_DTYPES: Record<string, Dtype> = {
  float32: 'F32',
  float: 'F32',
  float16: 'F16',
  half: 'F16',
  bfloat16: 'BF16',
  float64: 'F64',
};

/** The dtype named by `torch_dtype` (or `dtype`, its newer name); F32 when absent, as transformers loads it. */
export function configDtype(config: Config): Dtype {
  const t = config.torch_dtype ?? config.dtype;
  if (typeof t !== 'string') return 'F32';
  const d = TORCH_DTYPES[t.replace(/^torch\./, '')];
  if (d === undefined) throw new LensError('config.json', `torch_dtype ${JSON.stringify(t)} is not a floating-point dtype LoRA Lens knows`);
  return d;
}

/** More tensors than any real checkpoint has (the largest have tens of thousands). */
const MAX_LAYOUT_TENSORS = 1_000_000;

/** Collects tensors in module order. */
class Builder {
  readonly tensors: LayoutTensor[] = [];
  private params = 0;
  constructor(
    private readonly dtype: Dtype,
    private readonly layers: unknown,
  ) {}

  /** A Linear: weight [out, in], optional bias [out]. */
  linear(module: string, inF: number, outF: number, bias: boolean): void {
    this.add(module, 'weight', [outF, inF], 'linear');
    if (bias) this.add(module, 'bias', [outF], 'linear');
  }

  /** GPT-2's Conv1D: weight stored [in, out], bias [out]. */
  conv1d(module: string, inF: number, outF: number): void {
    this.add(module, 'weight', [inF, outF], 'conv1d');
    this.add(module, 'bias', [outF], 'conv1d');
  }

  embedding(module: string, num: number, dim: number): void {
    this.add(module, 'weight', [num, dim], 'embedding');
  }

  norm(module: string, dim: number, bias: boolean): void {
    this.add(module, 'weight', [dim], 'norm');
    if (bias) this.add(module, 'bias', [dim], 'norm');
  }

  add(module: string, param: string, shape: number[], moduleType: ModuleType): void {
    // A config is input: sizes are checked as tensors are laid out, before a hostile one (num_hidden_layers
    // 1e9) can fill the heap, and parameter counts stay exact integers.
    if (this.tensors.length >= MAX_LAYOUT_TENSORS) throw new LensError('config.json', `describes more than ${MAX_LAYOUT_TENSORS} tensors (num_hidden_layers ${JSON.stringify(this.layers)}); not a real model`);
    const numel = shape.reduce((a, d) => a * d, 1);
    this.params += numel;
    if (!Number.isSafeInteger(this.params)) throw new LensError('config.json', `describes more than 2^53 parameters (at ${module}.${param}, shape ${JSON.stringify(shape)}); not a real model, and not countable exactly`);
    this.tensors.push({ name: `${module}.${param}`, dtype: this.dtype, shape, module, moduleType });
  }
}

/** Reads integer and boolean config fields, with transformers' defaults, naming the missing field. */
class Fields {
  constructor(
    private readonly config: Config,
    private readonly modelType: string,
  ) {}

  int(key: string, fallback?: number): number {
    const v = this.config[key];
    if (v === undefined || v === null) {
      if (fallback !== undefined) return fallback;
      throw new LensError('config.json', `${this.modelType} config has no ${key}`);
    }
    if (!Number.isSafeInteger(v) || (v as number) < 0) throw new LensError('config.json', `${key} must be a non-negative integer (found ${JSON.stringify(v)})`);
    return v as number;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.config[key];
    return typeof v === 'boolean' ? v : fallback;
  }
}

function architecture(config: Config): string {
  const a = config.architectures;
  return Array.isArray(a) && typeof a[0] === 'string' ? a[0] : '';
}

/** Labels of a classification head (`num_labels` is not saved; `id2label` is). */
function numLabels(config: Config): number {
  const m = config.id2label;
  if (m !== null && typeof m === 'object') return Object.keys(m).length;
  return typeof config.num_labels === 'number' ? config.num_labels : 2;
}

/**
 * Llama-style decoders (Llama, Mistral, Qwen2, Gemma 1/2/3, StarCoder2): `model.embed_tokens`,
 * `model.layers.N.self_attn.{q,k,v,o}_proj`, an MLP, per-layer norms, `model.norm`, `lm_head` unless tied.
 */
function decoder(config: Config, modelType: string, b: Builder): void {
  const f = new Fields(config, modelType);
  const hidden = f.int('hidden_size');
  const layers = f.int('num_hidden_layers');
  const heads = f.int('num_attention_heads');
  const kvHeads = f.int('num_key_value_heads', heads);
  const headDim = f.int('head_dim', Math.floor(hidden / heads));
  const inter = f.int('intermediate_size');
  const vocab = f.int('vocab_size');
  const gemma = modelType === 'gemma' || modelType === 'gemma2' || modelType === 'gemma3_text';
  const starcoder2 = modelType === 'starcoder2';
  // Which projections carry biases.
  const qkvBias = starcoder2 ? f.bool('use_bias', true) : modelType === 'qwen2' || f.bool('attention_bias', false);
  const oBias = starcoder2 ? f.bool('use_bias', true) : modelType !== 'qwen2' && f.bool('attention_bias', false);
  const mlpBias = starcoder2 ? f.bool('use_bias', true) : f.bool('mlp_bias', false);
  const normBias = starcoder2; // StarCoder2's LayerNorm has a bias; the RMSNorms have none.
  const tied = f.bool('tie_word_embeddings', gemma || starcoder2);

  b.embedding('model.embed_tokens', vocab, hidden);
  for (let i = 0; i < layers; i++) {
    const p = `model.layers.${i}`;
    b.linear(`${p}.self_attn.q_proj`, hidden, heads * headDim, qkvBias);
    b.linear(`${p}.self_attn.k_proj`, hidden, kvHeads * headDim, qkvBias);
    b.linear(`${p}.self_attn.v_proj`, hidden, kvHeads * headDim, qkvBias);
    b.linear(`${p}.self_attn.o_proj`, heads * headDim, hidden, oBias);
    if (modelType === 'gemma3_text') {
      b.norm(`${p}.self_attn.q_norm`, headDim, false);
      b.norm(`${p}.self_attn.k_norm`, headDim, false);
    }
    if (starcoder2) {
      b.linear(`${p}.mlp.c_fc`, hidden, inter, mlpBias);
      b.linear(`${p}.mlp.c_proj`, inter, hidden, mlpBias);
    } else {
      b.linear(`${p}.mlp.gate_proj`, hidden, inter, mlpBias);
      b.linear(`${p}.mlp.up_proj`, hidden, inter, mlpBias);
      b.linear(`${p}.mlp.down_proj`, inter, hidden, mlpBias);
    }
    b.norm(`${p}.input_layernorm`, hidden, normBias);
    b.norm(`${p}.post_attention_layernorm`, hidden, normBias);
    if (modelType === 'gemma2' || modelType === 'gemma3_text') {
      b.norm(`${p}.pre_feedforward_layernorm`, hidden, false);
      b.norm(`${p}.post_feedforward_layernorm`, hidden, false);
    }
  }
  b.norm('model.norm', hidden, normBias);
  if (!tied) b.linear('lm_head', hidden, vocab, false);
}

/** GPT-2: Conv1D layers, stored [in, out]; `transformer.` prefix under GPT2LMHeadModel and the task heads. */
function gpt2(config: Config, b: Builder): void {
  const f = new Fields(config, 'gpt2');
  const d = f.int('n_embd');
  const inner = f.int('n_inner', 4 * d);
  const arch = architecture(config);
  const p = arch === 'GPT2Model' || arch === '' ? '' : 'transformer.';
  b.embedding(`${p}wte`, f.int('vocab_size'), d);
  b.embedding(`${p}wpe`, f.int('n_positions'), d);
  for (let i = 0; i < f.int('n_layer'); i++) {
    const h = `${p}h.${i}`;
    b.norm(`${h}.ln_1`, d, true);
    b.conv1d(`${h}.attn.c_attn`, d, 3 * d);
    b.conv1d(`${h}.attn.c_proj`, d, d);
    b.norm(`${h}.ln_2`, d, true);
    b.conv1d(`${h}.mlp.c_fc`, d, inner);
    b.conv1d(`${h}.mlp.c_proj`, inner, d);
  }
  b.norm(`${p}ln_f`, d, true);
  if (arch === 'GPT2ForSequenceClassification') b.linear('score', d, numLabels(config), false);
  else if (arch === 'GPT2LMHeadModel' && !f.bool('tie_word_embeddings', true)) b.linear('lm_head', d, f.int('vocab_size'), false);
}

/** GPT-NeoX (Pythia): fused `attention.query_key_value`, `embed_out` as the untied head. */
function gptNeox(config: Config, b: Builder): void {
  const f = new Fields(config, 'gpt_neox');
  const hidden = f.int('hidden_size');
  const inter = f.int('intermediate_size');
  const vocab = f.int('vocab_size');
  const bias = f.bool('attention_bias', true);
  b.embedding('gpt_neox.embed_in', vocab, hidden);
  for (let i = 0; i < f.int('num_hidden_layers'); i++) {
    const p = `gpt_neox.layers.${i}`;
    b.norm(`${p}.input_layernorm`, hidden, true);
    b.norm(`${p}.post_attention_layernorm`, hidden, true);
    b.linear(`${p}.attention.query_key_value`, hidden, 3 * hidden, bias);
    b.linear(`${p}.attention.dense`, hidden, hidden, bias);
    b.linear(`${p}.mlp.dense_h_to_4h`, hidden, inter, true);
    b.linear(`${p}.mlp.dense_4h_to_h`, inter, hidden, true);
  }
  b.norm('gpt_neox.final_layer_norm', hidden, true);
  if (!f.bool('tie_word_embeddings', false)) b.linear('embed_out', hidden, vocab, false);
}

/** Phi (1, 1.5, 2): biased projections, `dense` output, parallel MLP `fc1`/`fc2`, one norm per layer. */
function phi(config: Config, b: Builder): void {
  const f = new Fields(config, 'phi');
  const hidden = f.int('hidden_size');
  const heads = f.int('num_attention_heads');
  const kvHeads = f.int('num_key_value_heads', heads);
  const headDim = Math.floor(hidden / heads);
  const inter = f.int('intermediate_size');
  const vocab = f.int('vocab_size');
  b.embedding('model.embed_tokens', vocab, hidden);
  for (let i = 0; i < f.int('num_hidden_layers'); i++) {
    const p = `model.layers.${i}`;
    b.linear(`${p}.self_attn.q_proj`, hidden, heads * headDim, true);
    b.linear(`${p}.self_attn.k_proj`, hidden, kvHeads * headDim, true);
    b.linear(`${p}.self_attn.v_proj`, hidden, kvHeads * headDim, true);
    b.linear(`${p}.self_attn.dense`, heads * headDim, hidden, true);
    if (f.bool('qk_layernorm', false)) {
      b.norm(`${p}.self_attn.q_layernorm`, headDim, true);
      b.norm(`${p}.self_attn.k_layernorm`, headDim, true);
    }
    b.linear(`${p}.mlp.fc1`, hidden, inter, true);
    b.linear(`${p}.mlp.fc2`, inter, hidden, true);
    b.norm(`${p}.input_layernorm`, hidden, true);
  }
  b.norm('model.final_layernorm', hidden, true);
  if (!f.bool('tie_word_embeddings', false)) b.linear('lm_head', hidden, vocab, true);
}

/** Phi-3: fused `qkv_proj` and `gate_up_proj`, no biases. */
function phi3(config: Config, b: Builder): void {
  const f = new Fields(config, 'phi3');
  const hidden = f.int('hidden_size');
  const heads = f.int('num_attention_heads');
  const kvHeads = f.int('num_key_value_heads', heads);
  const headDim = f.int('head_dim', Math.floor(hidden / heads));
  const inter = f.int('intermediate_size');
  const vocab = f.int('vocab_size');
  b.embedding('model.embed_tokens', vocab, hidden);
  for (let i = 0; i < f.int('num_hidden_layers'); i++) {
    const p = `model.layers.${i}`;
    b.linear(`${p}.self_attn.o_proj`, heads * headDim, hidden, false);
    b.linear(`${p}.self_attn.qkv_proj`, hidden, (heads + 2 * kvHeads) * headDim, false);
    b.linear(`${p}.mlp.gate_up_proj`, hidden, 2 * inter, false);
    b.linear(`${p}.mlp.down_proj`, inter, hidden, false);
    b.norm(`${p}.input_layernorm`, hidden, false);
    b.norm(`${p}.post_attention_layernorm`, hidden, false);
  }
  b.norm('model.norm', hidden, false);
  if (!f.bool('tie_word_embeddings', false)) b.linear('lm_head', hidden, vocab, false);
}

/** BERT: BertModel bare, or under `bert.` with the masked-LM or classification head. */
function bert(config: Config, b: Builder): void {
  const f = new Fields(config, 'bert');
  const hidden = f.int('hidden_size');
  const inter = f.int('intermediate_size');
  const arch = architecture(config);
  const p = arch === 'BertModel' || arch === '' ? '' : 'bert.';
  b.embedding(`${p}embeddings.word_embeddings`, f.int('vocab_size'), hidden);
  b.embedding(`${p}embeddings.position_embeddings`, f.int('max_position_embeddings'), hidden);
  b.embedding(`${p}embeddings.token_type_embeddings`, f.int('type_vocab_size', 2), hidden);
  b.norm(`${p}embeddings.LayerNorm`, hidden, true);
  for (let i = 0; i < f.int('num_hidden_layers'); i++) {
    const l = `${p}encoder.layer.${i}`;
    b.linear(`${l}.attention.self.query`, hidden, hidden, true);
    b.linear(`${l}.attention.self.key`, hidden, hidden, true);
    b.linear(`${l}.attention.self.value`, hidden, hidden, true);
    b.linear(`${l}.attention.output.dense`, hidden, hidden, true);
    b.norm(`${l}.attention.output.LayerNorm`, hidden, true);
    b.linear(`${l}.intermediate.dense`, hidden, inter, true);
    b.linear(`${l}.output.dense`, inter, hidden, true);
    b.norm(`${l}.output.LayerNorm`, hidden, true);
  }
  if (arch === 'BertForMaskedLM') {
    b.add('cls.predictions', 'bias', [f.int('vocab_size')], 'linear');
    b.linear('cls.predictions.transform.dense', hidden, hidden, true);
    b.norm('cls.predictions.transform.LayerNorm', hidden, true);
  } else {
    b.linear(`${p}pooler.dense`, hidden, hidden, true);
    if (arch === 'BertForSequenceClassification') b.linear('classifier', hidden, numLabels(config), true);
  }
}

/** DistilBERT: DistilBertModel bare, or under `distilbert.` with the masked-LM or classification head. */
function distilbert(config: Config, b: Builder): void {
  const f = new Fields(config, 'distilbert');
  const dim = f.int('dim');
  const hiddenDim = f.int('hidden_dim');
  const vocab = f.int('vocab_size');
  const arch = architecture(config);
  const p = arch === 'DistilBertModel' || arch === '' ? '' : 'distilbert.';
  b.embedding(`${p}embeddings.word_embeddings`, vocab, dim);
  b.embedding(`${p}embeddings.position_embeddings`, f.int('max_position_embeddings'), dim);
  b.norm(`${p}embeddings.LayerNorm`, dim, true);
  for (let i = 0; i < f.int('n_layers'); i++) {
    const l = `${p}transformer.layer.${i}`;
    for (const proj of ['q_lin', 'k_lin', 'v_lin', 'out_lin']) b.linear(`${l}.attention.${proj}`, dim, dim, true);
    b.norm(`${l}.sa_layer_norm`, dim, true);
    b.linear(`${l}.ffn.lin1`, dim, hiddenDim, true);
    b.linear(`${l}.ffn.lin2`, hiddenDim, dim, true);
    b.norm(`${l}.output_layer_norm`, dim, true);
  }
  if (arch === 'DistilBertForMaskedLM') {
    b.linear('vocab_transform', dim, dim, true);
    b.norm('vocab_layer_norm', dim, true);
    b.add('vocab_projector', 'bias', [vocab], 'linear'); // its weight is tied to the word embeddings
  } else if (arch === 'DistilBertForSequenceClassification') {
    b.linear('pre_classifier', dim, dim, true);
    b.linear('classifier', dim, numLabels(config), true);
  }
}

/** The model types modelLayout knows. */
export const SUPPORTED_MODEL_TYPES = [
  'llama',
  'mistral',
  'qwen2',
  'gemma',
  'gemma2',
  'gemma3_text',
  'starcoder2',
  'gpt2',
  'gpt_neox',
  'phi',
  'phi3',
  'bert',
  'distilbert',
] as const;

/**
 * The tensors `save_pretrained` writes for a model with this config.json, in module order, at the
 * config's torch_dtype (or `dtype` when given). Throws a LensError for a model type it does not know.
 */
export function modelLayout(config: Config, dtype?: Dtype): LayoutTensor[] {
  const cfg = config;
  const modelType = config.model_type;
  if (typeof modelType !== 'string') throw new LensError('config.json', 'has no model_type');
  const b = new Builder(dtype ?? configDtype(cfg), cfg.num_hidden_layers);
  switch (modelType) {
    case 'llama':
    case 'mistral':
    case 'qwen2':
    case 'gemma':
    case 'gemma2':
    case 'gemma3_text':
    case 'starcoder2':
      decoder(cfg, modelType, b);
      break;
    case 'gpt2':
      gpt2(cfg, b);
      break;
    case 'gpt_neox':
      gptNeox(cfg, b);
      break;
    case 'phi':
      phi(cfg, b);
      break;
    case 'phi3':
      phi3(cfg, b);
      break;
    case 'bert':
      bert(cfg, b);
      break;
    case 'distilbert':
      distilbert(cfg, b);
      break;
    default:
      throw new LensError('config.json', `model_type ${JSON.stringify(modelType)} is not one LoRA Lens can lay out from a config (${SUPPORTED_MODEL_TYPES.join(', ')}); give a model folder with weights instead`);
  }
  return b.tensors;
}

/**
 * PEFT's default target_modules by model type (TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING in
 * PEFT 0.21), which PEFT applies when a LoraConfig leaves target_modules unset. StarCoder2, DistilBERT
 * and Phi-3 have none.
 */
const PEFT_DEFAULT_TARGETS: Record<string, string[]> = {
  llama: ['q_proj', 'v_proj'],
  mistral: ['q_proj', 'v_proj'],
  qwen2: ['q_proj', 'v_proj'],
  gemma: ['q_proj', 'v_proj'],
  gemma2: ['q_proj', 'v_proj'],
  gemma3_text: ['q_proj', 'v_proj'],
  gpt2: ['c_attn'],
  gpt_neox: ['query_key_value'],
  bert: ['query', 'value'],
  phi: ['q_proj', 'v_proj', 'fc1', 'fc2'],
};

/** The modules PEFT targets when target_modules is null, or undefined when it has no default for the model. */
export function defaultTargetModules(config: Config | undefined): string[] | undefined {
  const mt = config?.model_type;
  return typeof mt === 'string' ? PEFT_DEFAULT_TARGETS[mt] : undefined;
}
