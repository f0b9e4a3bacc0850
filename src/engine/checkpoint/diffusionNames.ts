/**
 * Where the image-model adapter formats' module names point in a base, matched against the base's own
 * tensor names, never guessed:
 * - kohya-ss / LyCORIS: the module path with `.` written as `_`, under `lora_unet_` (the UNet, or FLUX's
 *   transformer), `lora_te_` / `lora_te1_` (the first text encoder), `lora_te2_`, `lora_te3_`;
 * - diffusers: the module path under the pipeline component (`unet.`, `text_encoder.`, `text_encoder_2.`,
 *   `transformer.`); ComfyUI's and ai-toolkit's `diffusion_model.` names the UNet or FLUX transformer.
 * The base may be a diffusers folder (`unet.down_blocks…`), a single component folder (`down_blocks…`), or
 * a single-file checkpoint (`model.diffusion_model.…`, `cond_stage_model.transformer.…`,
 * `conditioner.embedders.0.transformer.…`, FLUX's `double_blocks.…`). A module is also named in its other
 * layout: a Stable Diffusion UNet's original or diffusers names (unetLayout.ts), FLUX's BFL or diffusers
 * names (fluxLayout.ts), an OpenCLIP text tower's own or CLIPTextModel's (SD 2.x's
 * `cond_stage_model.model.…`, SDXL's `conditioner.embedders.1.model.…`, openClipLayout.ts). Where layouts
 * fuse modules by rows (BFL's `img_attn.qkv`, OpenCLIP's `in_proj_weight`), a name of one of the stacked
 * modules denotes a row part of the fused tensor, and a fused name the stacked modules.
 */
import { TensorInfo } from '../../shared/safetensors/header';
import { Checkpoint } from './checkpoint';
import { bflToDiffusers, diffusersToBfl } from './fluxLayout';
import { IN_PROJ, openClipToHf } from './openClipLayout';
import { diffusersToLdm, ldmToDiffusers } from './unetLayout';

type Layout = 'ldm' | 'diffusers' | 'flux' | 'openclip';

/** A base tensor-name prefix, the pipeline component it is, the kohya prefixes that name it, and its layout. */
interface Root {
  re: RegExp;
  component: string;
  kohya: string[];
  layout?: Layout;
}

const FLUX_TOP = '(double_blocks|single_blocks|img_in|txt_in|time_in|vector_in|guidance_in|final_layer)';

const ROOTS: Root[] = [
  { re: /^unet\./, component: 'unet', kohya: ['lora_unet_'], layout: 'diffusers' },
  { re: /^transformer\./, component: 'transformer', kohya: ['lora_unet_', 'lora_transformer_'], layout: 'flux' },
  { re: /^text_encoder\./, component: 'text_encoder', kohya: ['lora_te_', 'lora_te1_'] },
  { re: /^text_encoder_2\./, component: 'text_encoder_2', kohya: ['lora_te2_'] },
  { re: /^text_encoder_3\./, component: 'text_encoder_3', kohya: ['lora_te3_'] },
  // ComfyUI saves BFL FLUX single files under the UNet's prefix.
  { re: new RegExp(`^model\\.diffusion_model\\.(?=${FLUX_TOP}(\\.|$))`), component: 'transformer', kohya: ['lora_unet_', 'lora_transformer_'], layout: 'flux' },
  { re: /^model\.diffusion_model\./, component: 'unet', kohya: ['lora_unet_'], layout: 'ldm' },
  { re: /^cond_stage_model\.transformer\./, component: 'text_encoder', kohya: ['lora_te_', 'lora_te1_'] },
  { re: /^cond_stage_model\.model\./, component: 'text_encoder', kohya: ['lora_te_', 'lora_te1_'], layout: 'openclip' },
  { re: /^conditioner\.embedders\.0\.transformer\./, component: 'text_encoder', kohya: ['lora_te1_'] },
  { re: /^conditioner\.embedders\.1\.model\./, component: 'text_encoder_2', kohya: ['lora_te2_'], layout: 'openclip' },
  // A component alone: a UNet or FLUX transformer (folder or single file), a CLIP text encoder.
  { re: /^(?=(down_blocks|up_blocks|mid_block|conv_in|time_embedding|add_embedding)(\.|$))/, component: 'unet', kohya: ['lora_unet_'], layout: 'diffusers' },
  {
    re: new RegExp(`^(?=(${FLUX_TOP.slice(1, -1)}|transformer_blocks|single_transformer_blocks|x_embedder|context_embedder|time_text_embed|norm_out|proj_out)(\\.|$))`),
    component: 'transformer',
    kohya: ['lora_unet_', 'lora_transformer_'],
    layout: 'flux',
  },
  { re: /^(?=text_model\.)/, component: 'text_encoder', kohya: ['lora_te_', 'lora_te1_'] },
];

/** The components ComfyUI calls `diffusion_model` (its generic LoRA keys: `diffusion_model.<module path>…`). */
const DIFFUSION_MODEL = new Set(['unet', 'transformer']);

/** The prefixes a dotted (diffusers-style) adapter name puts before a module path of this root. */
function dottedPrefixes(r: Root): string[] {
  return DIFFUSION_MODEL.has(r.component) ? [`${r.component}.`, 'diffusion_model.'] : [`${r.component}.`];
}

/** A row part of a fused base module: part `part` of `parts` (q, k, v, then the rest: an MLP's rows). */
export interface PartTarget {
  module: string;
  part: number;
  parts: number;
}

/** Another name of a module in the base: whole, or a row part of it. */
interface Alias {
  local: string;
  part: number;
  parts: number;
}

/** The module a weight tensor belongs to (`…in_proj_weight` is OpenCLIP's fused `…in_proj`). */
function moduleOf(name: string): string | undefined {
  if (name.endsWith(`.${IN_PROJ}_weight`)) return name.slice(0, -'_weight'.length);
  return name.endsWith('.weight') ? name.slice(0, -'.weight'.length) : undefined;
}

/**
 * The base's modules under every name an adapter may give them: kohya names (`lora_unet_down_blocks_0_…`)
 * and diffusers names (`unet.down_blocks.0.…`), in each layout the module has.
 */
export class BaseModuleNames {
  /** Adapter-side module name -> the module path in the base (null when two modules spell the same name). */
  private readonly modules = new Map<string, string | null>();
  /** Adapter-side module name -> the row part of a fused base module it is. */
  private readonly parts = new Map<string, PartTarget | null>();
  /** kohya or dotted name of a fused FLUX projection (BFL `…_img_attn_qkv`, `diffusion_model.…img_attn.qkv`) -> the base modules stacked in it, in row order. */
  private readonly fusedParts = new Map<string, string[]>();

  constructor(private readonly base: Checkpoint) {
    const names = new Set(base.tensors.map((t) => t.name));
    for (const t of base.tensors) {
      const module = moduleOf(t.name);
      if (module === undefined) continue;
      const root = ROOTS.map((r) => ({ r, hit: r.re.exec(module) })).find((x) => x.hit);
      if (!root) continue;
      const { r, hit } = root;
      const path = module.slice(hit![0].length);
      const aliases: Alias[] = [{ local: path, part: 0, parts: 1 }];
      if (r.layout === 'ldm' || r.layout === 'diffusers') {
        const other =
          r.layout === 'ldm' ? ldmToDiffusers(path) : diffusersToLdm(path, (i) => [...names].some((n) => n.startsWith(`${hit![0]}up_blocks.${i}.attentions.`)));
        if (other !== undefined) aliases.push({ local: other, part: 0, parts: 1 });
      } else if (r.layout === 'flux') {
        const bfl = diffusersToBfl(path);
        if (bfl && bfl.parts > 1) {
          for (const key of [...r.kohya.map((p) => p + bfl.bfl.replace(/\./g, '_')), ...dottedPrefixes(r).map((p) => p + bfl.bfl)]) {
            const parts = this.fusedParts.get(key) ?? new Array<string>(bfl.parts);
            parts[bfl.part] = module;
            this.fusedParts.set(key, parts);
          }
        } else if (bfl) aliases.push({ local: bfl.bfl, part: 0, parts: 1 });
        for (const d of bflToDiffusers(path) ?? []) aliases.push({ local: d.diffusers, part: d.part, parts: d.parts });
      } else if (r.layout === 'openclip') {
        for (const c of openClipToHf(path) ?? []) aliases.push({ local: c.hf, part: c.part, parts: c.parts });
      }
      for (const a of aliases) {
        const keys = [...r.kohya.map((p) => p + a.local.replace(/\./g, '_')), ...dottedPrefixes(r).map((p) => p + a.local)];
        for (const key of keys) {
          if (a.parts === 1) this.add(key, module);
          else this.addPart(key, { module, part: a.part, parts: a.parts });
        }
      }
    }
  }

  private add(key: string, module: string): void {
    const prev = this.modules.get(key);
    this.modules.set(key, prev === undefined || prev === module ? module : null);
  }

  private addPart(key: string, target: PartTarget): void {
    const prev = this.parts.get(key);
    this.parts.set(key, prev === undefined ? target : null);
  }

  /** The base module a kohya name or a component-prefixed (or `diffusion_model.`) diffusers name denotes, or undefined (unknown) / null (ambiguous). */
  module(name: string): string | null | undefined {
    return this.modules.get(name);
  }

  /** The row part of a fused base module that a kohya or diffusers name denotes (a q_proj in OpenCLIP's in_proj, a to_q in BFL's qkv). */
  part(name: string): PartTarget | null | undefined {
    return this.modules.has(name) ? undefined : this.parts.get(name);
  }

  /** The base modules a fused FLUX projection's kohya or dotted name stacks, in row order, when the base has them all. */
  fused(name: string): string[] | undefined {
    const parts = this.fusedParts.get(name);
    // Array.from turns the holes of parts the base lacks into undefined (every() would skip them).
    return parts && Array.from(parts).every((x) => x !== undefined) ? parts : undefined;
  }

  /** A module's parameter (`weight`, `bias`) in the base. */
  tensor(module: string, param: 'weight' | 'bias'): TensorInfo | undefined {
    return this.base.byName.get(module.endsWith(`.${IN_PROJ}`) ? `${module}_${param}` : `${module}.${param}`);
  }
}

/** Why a kohya name did not resolve, in words a user can act on. */
export function kohyaMiss(name: string, base: string): string {
  return `kohya module '${name}' matches no tensor of the base ${base} (no module whose path, with '.' written '_', gives this name, in the diffusers or the original UNet layout, FLUX's BFL or diffusers names, or OpenCLIP's)`;
}
