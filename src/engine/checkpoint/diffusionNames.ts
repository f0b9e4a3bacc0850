/**
 * Where the image-model adapter formats' module names point in a base, matched against the base's own
 * tensor names, never guessed:
 * - kohya-ss / LyCORIS: the module path with `.` written as `_`, under `lora_unet_` (the UNet, or FLUX's
 *   transformer), `lora_te_` / `lora_te1_` (the first text encoder), `lora_te2_`, `lora_te3_`;
 * - diffusers: the module path, under the pipeline component (`unet.`, `text_encoder.`, `transformer.`)
 *   or bare (the old attention-processor format names UNet modules without a prefix).
 * The base may be a diffusers folder (`unet.down_blocks…`), a single component folder (`down_blocks…`), or
 * a single-file checkpoint (`model.diffusion_model.…`, `cond_stage_model.transformer.…`,
 * `conditioner.embedders.0.transformer.…`, FLUX's `double_blocks.…`). A Stable Diffusion UNet module is
 * also named in the other UNet layout (unetLayout.ts): kohya files name the diffusers layout
 * (`lora_unet_down_blocks_1_attentions_0_…`), older ones the original (`lora_unet_input_blocks_4_1_…`), and
 * either resolves in a diffusers folder or a single file.
 */
import { TensorInfo } from '../../shared/safetensors/header';
import { Checkpoint } from './checkpoint';
import { diffusersToBfl } from './fluxLayout';
import { diffusersToLdm, ldmToDiffusers } from './unetLayout';

/** A base tensor-name prefix, the kohya prefixes that name modules under it, and which UNet layout it holds. */
const KOHYA_ROOTS: Array<[RegExp, string[], ('ldm' | 'diffusers' | 'flux')?]> = [
  [/^unet\./, ['lora_unet_'], 'diffusers'],
  [/^transformer\./, ['lora_unet_', 'lora_transformer_'], 'flux'],
  [/^text_encoder\./, ['lora_te_', 'lora_te1_']],
  [/^text_encoder_2\./, ['lora_te2_']],
  [/^text_encoder_3\./, ['lora_te3_']],
  [/^model\.diffusion_model\./, ['lora_unet_'], 'ldm'],
  [/^cond_stage_model\.transformer\./, ['lora_te_', 'lora_te1_']],
  [/^conditioner\.embedders\.0\.transformer\./, ['lora_te1_']],
  // A component alone: a UNet or FLUX transformer (folder or single file), a CLIP text encoder.
  [/^(?=(down_blocks|up_blocks|mid_block|conv_in|time_embedding|add_embedding)(\.|$))/, ['lora_unet_'], 'diffusers'],
  [/^(?=(double_blocks|single_blocks|img_in|txt_in|time_in|vector_in|guidance_in|final_layer|transformer_blocks|single_transformer_blocks|x_embedder|context_embedder|time_text_embed|norm_out|proj_out)(\.|$))/, ['lora_unet_', 'lora_transformer_'], 'flux'],
  [/^(?=text_model\.)/, ['lora_te_', 'lora_te1_']],
];

/** The base's tensors under every kohya module name that denotes them (`lora_unet_down_blocks_0_…` -> `unet.down_blocks.0….weight`). */
export class KohyaNames {
  /** kohya module name -> the module path in the base (null when two modules spell the same name). */
  private readonly modules = new Map<string, string | null>();
  /** kohya name of a fused FLUX projection (BFL `…_img_attn_qkv`) -> the base modules stacked in it, in row order. */
  private readonly fusedParts = new Map<string, string[]>();

  constructor(private readonly base: Checkpoint) {
    const names = new Set(base.tensors.map((t) => t.name));
    for (const t of base.tensors) {
      const m = /^(.*)\.weight$/.exec(t.name);
      if (!m) continue;
      for (const [re, prefixes, unet] of KOHYA_ROOTS) {
        const hit = re.exec(m[1]);
        if (!hit) continue;
        const path = m[1].slice(hit[0].length);
        const flux = unet === 'flux' ? diffusersToBfl(path) : undefined;
        if (flux && flux.parts > 1) {
          for (const p of prefixes) {
            const key = p + flux.bfl.replace(/\./g, '_');
            const parts = this.fusedParts.get(key) ?? new Array<string>(flux.parts);
            parts[flux.part] = m[1];
            this.fusedParts.set(key, parts);
          }
        }
        const other =
          unet === 'ldm'
            ? ldmToDiffusers(path)
            : unet === 'diffusers'
              ? diffusersToLdm(path, (i) => [...names].some((n) => n.startsWith(`${hit[0]}up_blocks.${i}.attentions.`)))
              : flux?.parts === 1
                ? flux.bfl
                : undefined;
        for (const local of other === undefined ? [path] : [path, other]) {
          for (const p of prefixes) this.add(p + local.replace(/\./g, '_'), m[1]);
        }
        break;
      }
    }
  }

  private add(key: string, module: string): void {
    const prev = this.modules.get(key);
    this.modules.set(key, prev === undefined || prev === module ? module : null);
  }

  /** The base module a kohya name denotes, or undefined (unknown) / null (ambiguous). */
  module(kohya: string): string | null | undefined {
    return this.modules.get(kohya);
  }

  /** The base modules a fused FLUX projection's kohya name stacks, in row order, when the base has them all. */
  fused(kohya: string): string[] | undefined {
    const parts = this.fusedParts.get(kohya);
    // Array.from turns the holes of parts the base lacks into undefined (every() would skip them).
    return parts && Array.from(parts).every((x) => x !== undefined) ? parts : undefined;
  }

  /** A module's parameter (`weight`, `bias`) in the base. */
  tensor(module: string, param: 'weight' | 'bias'): TensorInfo | undefined {
    return this.base.byName.get(`${module}.${param}`);
  }
}

/** Why a kohya name did not resolve, in words a user can act on. */
export function kohyaMiss(name: string, base: string): string {
  return `kohya module '${name}' matches no tensor of the base ${base} (no module whose path, with '.' written '_', gives this name, in the diffusers or the original UNet layout)`;
}
