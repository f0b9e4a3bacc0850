/**
 * Where the image-model adapter formats' module names point in a base, matched against the base's own
 * tensor names, never guessed:
 * - kohya-ss / LyCORIS: the module path with `.` written as `_`, under `lora_unet_` (the UNet, or FLUX's
 *   transformer), `lora_te_` / `lora_te1_` (the first text encoder), `lora_te2_`, `lora_te3_`;
 * - diffusers: the module path, under the pipeline component (`unet.`, `text_encoder.`, `transformer.`)
 *   or bare (the old attention-processor format names UNet modules without a prefix).
 * The base may be a diffusers folder (`unet.down_blocks…`), a single component folder (`down_blocks…`), or
 * a single-file checkpoint (`model.diffusion_model.…`, `cond_stage_model.transformer.…`,
 * `conditioner.embedders.0.transformer.…`, FLUX's `double_blocks.…`).
 */
import { TensorInfo } from '../../shared/safetensors/header';
import { Checkpoint } from './checkpoint';

/** A base tensor-name prefix and the kohya prefixes that name modules under it. */
const KOHYA_ROOTS: Array<[RegExp, string[]]> = [
  [/^unet\./, ['lora_unet_']],
  [/^transformer\./, ['lora_unet_', 'lora_transformer_']],
  [/^text_encoder\./, ['lora_te_', 'lora_te1_']],
  [/^text_encoder_2\./, ['lora_te2_']],
  [/^text_encoder_3\./, ['lora_te3_']],
  [/^model\.diffusion_model\./, ['lora_unet_']],
  [/^cond_stage_model\.transformer\./, ['lora_te_', 'lora_te1_']],
  [/^conditioner\.embedders\.0\.transformer\./, ['lora_te1_']],
  // A component alone: a UNet or FLUX transformer (folder or single file), a CLIP text encoder.
  [/^(?=(down_blocks|up_blocks|mid_block|conv_in|time_embedding|add_embedding)\.)/, ['lora_unet_']],
  [/^(?=(double_blocks|single_blocks|img_in|txt_in|time_in|vector_in|guidance_in|final_layer|transformer_blocks|single_transformer_blocks|x_embedder|context_embedder|time_text_embed|norm_out|proj_out)\.)/, ['lora_unet_', 'lora_transformer_']],
  [/^(?=text_model\.)/, ['lora_te_', 'lora_te1_']],
];

/** The base's tensors under every kohya module name that denotes them (`lora_unet_down_blocks_0_…` -> `unet.down_blocks.0….weight`). */
export class KohyaNames {
  /** kohya module name -> the module path in the base (null when two modules spell the same name). */
  private readonly modules = new Map<string, string | null>();

  constructor(private readonly base: Checkpoint) {
    for (const t of base.tensors) {
      const m = /^(.*)\.weight$/.exec(t.name);
      if (!m) continue;
      for (const [re, prefixes] of KOHYA_ROOTS) {
        const hit = re.exec(m[1]);
        if (!hit) continue;
        const local = m[1].slice(hit[0].length).replace(/\./g, '_');
        for (const p of prefixes) {
          const key = p + local;
          const prev = this.modules.get(key);
          this.modules.set(key, prev === undefined || prev === m[1] ? m[1] : null);
        }
        break;
      }
    }
  }

  /** The base module a kohya name denotes, or undefined (unknown) / null (ambiguous). */
  module(kohya: string): string | null | undefined {
    return this.modules.get(kohya);
  }

  /** A module's parameter (`weight`, `bias`) in the base. */
  tensor(module: string, param: 'weight' | 'bias'): TensorInfo | undefined {
    return this.base.byName.get(`${module}.${param}`);
  }
}

/** Why a kohya name did not resolve, in words a user can act on. */
export function kohyaMiss(name: string, base: Checkpoint): string {
  const ldm = base.tensors.some((t) => t.name.startsWith('model.diffusion_model.input_blocks.'));
  const diffusers = base.tensors.some((t) => /(^|\.)down_blocks\.\d+\.(attentions|resnets)\./.test(t.name));
  if (/^lora_unet_(down_blocks|up_blocks|mid_block)_/.test(name) && ldm) {
    return `kohya module '${name}' names the diffusers UNet layout but the base is an original single-file checkpoint (input_blocks/output_blocks); give the diffusers folder of this model`;
  }
  if (/^lora_unet_(input_blocks|output_blocks|middle_block)_/.test(name) && diffusers) {
    return `kohya module '${name}' names the original (single-file) UNet layout but the base is a diffusers UNet (down_blocks/up_blocks); give the single-file checkpoint of this model`;
  }
  return `kohya module '${name}' matches no tensor of the base ${base.path} (no module whose path, with '.' written '_', gives this name)`;
}
