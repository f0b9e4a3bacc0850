/**
 * Census naming for image models: Stable Diffusion UNets (diffusers `down_blocks.N…` and the original
 * `model.diffusion_model.input_blocks.N…` of single-file checkpoints), CLIP / OpenCLIP / T5 text
 * encoders, FLUX and SD3 transformers (diffusers `transformer_blocks.N` / `single_transformer_blocks.N`
 * and Black Forest Labs' `double_blocks.N` / `single_blocks.N`), and VAEs; for model tensors, PEFT and
 * diffusers adapter keys, and kohya module names (`lora_unet_down_blocks_0_…`, `.` written as `_`).
 * Every rule below reads the name with `.` and `_` alike, so one rule covers both spellings.
 */

export type DiffusionCategory = 'attention' | 'mlp' | 'norm' | 'embedding' | 'final_norm' | 'other' | 'resnet' | 'time_embedding' | 'vae';

export interface DiffusionClass {
  category: DiffusionCategory;
  /** Always null: an image model's blocks are not one numbered stack (see `block`). */
  layer: null;
  projection: string | null;
  /** `unet`, `text_encoder`, `text_encoder_2`, `transformer`, `vae`. */
  component: string;
  /** The block the tensor sits in: `down.1`, `mid`, `up.2`, `input.4`, `double.7`, `single.12`, `layers.3`, `encoder`; null outside blocks. */
  block: string | null;
}

/** Components of a diffusers pipeline folder, as tensor-name prefixes (diffusers and PEFT use the same). */
const PIPELINE_PREFIX = /^(unet|text_encoder(?:_\d)?|transformer|vae|prior|controlnet)\.(.*)$/;
/** kohya-ss module-name prefixes: `lora_unet_` (also FLUX's transformer), `lora_te_` / `lora_te1_` … (text encoders). */
const KOHYA_PREFIX = /^lora_(unet|te\d?|transformer)_([^.]*)/;
/** Single-file (original Stable Diffusion) checkpoints: UNet, text encoder(s), VAE. */
const SINGLE_FILE: Array<[RegExp, string]> = [
  [/^model\.diffusion_model\.(.*)$/, 'unet'],
  [/^cond_stage_model\.(.*)$/, 'text_encoder'],
  [/^conditioner\.embedders\.0\.(.*)$/, 'text_encoder'],
  [/^conditioner\.embedders\.1\.(.*)$/, 'text_encoder_2'],
  [/^first_stage_model\.(.*)$/, 'vae'],
];
/** Roots of a bare component's names (a unet/ or transformer/ folder alone, a FLUX single file). */
const UNET_ROOT = /^(down_blocks|up_blocks|mid_block|conv_in|conv_norm_out|time_embedding|add_embedding)[._]/;
const TRANSFORMER_ROOT = /^(transformer_blocks|single_transformer_blocks|x_embedder|context_embedder|time_text_embed|double_blocks|single_blocks|img_in|txt_in|time_in|vector_in|guidance_in|final_layer)[._]/;
const VAE_ROOT = /^(encoder|decoder)[._](down|up|mid|conv_in|conv_out|norm_out|conv_norm_out)[._]|^(post_)?quant_conv[._]/;

/** Adapter-parameter tails of every format, removed so an adapter key names its module. */
const ADAPTER_TAIL =
  /(\.processor)?\.(lora_A|lora_B|lora_embedding_A|lora_embedding_B|lora_magnitude_vector|lora\.(?:down|up)|lora_linear_layer\.(?:down|up))(\.[^.]+)?(\.weight)?$|\.processor\.(to_[qkv]|to_out)_lora\.(down|up)\.weight$/;

/** A diffusion-model tensor's class, or undefined for a name of another world (a language model). */
export function classifyDiffusion(name: string): DiffusionClass | undefined {
  const kohya = KOHYA_PREFIX.exec(name);
  if (kohya) return fromKohya(kohya[1], kohya[2]);
  let n = name.replace(/^base_model\.model\./, '');
  const processor = /\.processor\.(to_[qkv]|to_out)_lora\.(down|up)\.weight$/.exec(n);
  n = processor ? n.slice(0, processor.index) + `.${processor[1] === 'to_out' ? 'to_out.0' : processor[1]}` : n.replace(ADAPTER_TAIL, '');
  const p = PIPELINE_PREFIX.exec(n);
  // `transformer.` also prefixes GPT-2's `transformer.h.0…`: a pipeline's transformer only with its own roots.
  if (p && (p[1] !== 'transformer' || TRANSFORMER_ROOT.test(p[2]))) return inComponent(p[1], p[2]);
  for (const [re, component] of SINGLE_FILE) {
    const m = re.exec(n);
    if (m) return inComponent(component, m[1]);
  }
  if (UNET_ROOT.test(n)) return inComponent('unet', n);
  if (TRANSFORMER_ROOT.test(n)) return inComponent('transformer', n);
  if (VAE_ROOT.test(n)) return inComponent('vae', n);
  return undefined;
}

function fromKohya(prefix: string, rest: string): DiffusionClass | undefined {
  if (prefix === 'unet' || prefix === 'transformer') {
    return TRANSFORMER_ROOT.test(rest) ? inComponent('transformer', rest) : inComponent('unet', rest);
  }
  const index = prefix === 'te' ? '' : prefix.slice(2);
  return inComponent(index === '' || index === '1' ? 'text_encoder' : `text_encoder_${index}`, rest);
}

/** The class of `local` (the name inside its component, `.` or `_` separated). */
function inComponent(component: string, local: string): DiffusionClass | undefined {
  const s = local.replace(/\.(weight|bias|scale|in_proj_weight|in_proj_bias)$/, '').replace(/\./g, '_');
  const make = (category: DiffusionCategory, block: string | null, projection: string | null = null): DiffusionClass => ({
    category,
    layer: null,
    projection,
    component,
    block,
  });
  if (component === 'vae') return make('vae', /^(encoder|decoder)_/.exec(s)?.[1] ?? null);
  if (component.startsWith('text_encoder')) return textEncoder(s, make);
  if (component === 'transformer') return transformer(s, make);
  if (component === 'unet') return unet(s, make);
  return make('other', null);
}

type Make = (category: DiffusionCategory, block: string | null, projection?: string | null) => DiffusionClass;

/** CLIP (transformers), OpenCLIP (original SD2 / SDXL checkpoints) and T5 encoders. */
function textEncoder(s: string, make: Make): DiffusionClass {
  const layer = /(?:encoder_layers|resblocks|encoder_block)_(\d+)_(.*)$/.exec(s);
  if (layer) {
    const block = `layers.${layer[1]}`;
    const inner = layer[2];
    if (/(^|_)(layer_norm\d|ln_\d|layer_norm)$/.test(inner) || /^layer_\d+_layer_norm$/.test(inner)) return make('norm', block);
    if (/^(self_attn|attn|layer_0_SelfAttention)_/.test(inner) || /^attn$/.test(inner)) return make('attention', block, lastProjection(inner));
    if (/^(mlp|layer_1_DenseReluDense)_/.test(inner)) return make('mlp', block, lastProjection(inner));
    return make('other', block);
  }
  if (/(token_embedding|position_embedding|positional_embedding|shared|embed_tokens)$/.test(s)) return make('embedding', null);
  if (/(final_layer_norm|ln_final)$/.test(s)) return make('final_norm', null);
  return make('other', null);
}

/** The projection's own name: `q_proj`, `to_k`, `to_out.0`, `fc1`, `c_fc`, `qkv`. */
function lastProjection(inner: string): string {
  const m = /(to_out_0|to_add_out|add_[qkv]_proj|to_[qkv]|[qkvo]_proj|out_proj|in_proj|c_fc|c_proj|fc\d|net_0_proj|net_2|qkv|proj|linear\d|proj_mlp|proj_out|wi_\d|wi|wo|SelfAttention_[qkvo])$/.exec(inner);
  return m ? m[1].replace(/^(to_out|net)_(\d)/, '$1.$2').replace(/^net\.0_proj$/, 'net.0.proj').replace(/^SelfAttention_/, '') : inner.split('_').pop()!;
}

/** A UNet, diffusers (`down_blocks.1.attentions.0…`) or original (`input_blocks.4.1…`). */
function unet(s: string, make: Make): DiffusionClass {
  const b = /^(down_blocks|up_blocks|input_blocks|output_blocks)_(\d+)_(.*)$/.exec(s) ?? /^(mid_block|middle_block)_(.*)$/.exec(s);
  if (!b) {
    if (/^(time_embedding|time_embed|add_embedding|label_emb)_/.test(s)) return make('time_embedding', null);
    if (/^(conv_norm_out|out_0)$/.test(s)) return make('final_norm', null);
    return make('other', null);
  }
  const names: Record<string, string> = { down_blocks: 'down', up_blocks: 'up', input_blocks: 'input', output_blocks: 'output' };
  const block = b.length === 4 ? `${names[b[1]]}.${b[2]}` : 'mid';
  const inner = b.length === 4 ? b[3] : b[2];
  if (/(^|_)(transformer_blocks|attentions)_|(^|_)(proj_in|proj_out)$/.test(inner) || /^\d+_(norm|proj_in|proj_out|transformer_blocks)/.test(inner)) {
    if (/_ff_/.test(inner)) return make('mlp', block, lastProjection(inner));
    if (/_attn\d_/.test(inner)) return make('attention', block, lastProjection(inner));
    if (/(^|_)norm\d?$/.test(inner)) return make('norm', block);
    return make('attention', block, lastProjection(inner));
  }
  if (/(^|_)(norm\d|in_layers_0|out_layers_0)$/.test(inner)) return make('norm', block);
  // Resnets (and their time-embedding projection), down- and upsamplers: the convolutional path.
  return make('resnet', block);
}

/** FLUX / SD3: diffusers (`transformer_blocks.N`, `single_transformer_blocks.N`) or BFL (`double_blocks.N`, `single_blocks.N`). */
function transformer(s: string, make: Make): DiffusionClass {
  const b = /^(transformer_blocks|double_blocks|single_transformer_blocks|single_blocks)_(\d+)_(.*)$/.exec(s);
  if (!b) {
    if (/^(time_text_embed|time_in)_/.test(s)) return make('time_embedding', null);
    if (/^(x_embedder|context_embedder|img_in|txt_in|vector_in|guidance_in|pos_embed)(_|$)/.test(s)) return make('embedding', null);
    if (/^(norm_out|final_layer_adaLN_modulation)/.test(s)) return make('final_norm', null);
    return make('other', null);
  }
  const block = `${b[1].startsWith('single') ? 'single' : 'double'}.${b[2]}`;
  const inner = b[3];
  if (/(^|_)(norm\d?(_context)?|norm_added_[qk]|norm_[qk]|query_norm|key_norm|mod_lin|modulation_lin|norm1_context|norm)(_linear)?$/.test(inner)) return make('norm', block);
  if (/^(ff|ff_context|img_mlp|txt_mlp)_|^proj_mlp$/.test(inner)) return make('mlp', block, lastProjection(inner));
  if (/^(attn|img_attn|txt_attn)_|^(linear1|linear2|proj_out)$/.test(inner)) return make('attention', block, lastProjection(inner));
  return make('other', block);
}
