/**
 * The two names of an OpenCLIP text tower module (SD 2.x's text encoder, SDXL's second): the original
 * single file's (`cond_stage_model.model.transformer.resblocks.3.attn.in_proj_weight`, SDXL's under
 * `conditioner.embedders.1.model.`) and transformers' CLIPTextModel(WithProjection) that diffusers folders
 * and kohya-ss's LoRA names use (`text_model.encoder.layers.3.self_attn.q_proj`), as kohya's and diffusers'
 * checkpoint conversions relate them. torch's MultiheadAttention keeps q, k and v fused: `in_proj_weight`
 * [3·d, d] and `in_proj_bias` [3·d] stack q_proj, k_proj and v_proj by rows, in that order.
 */

/** Inside resblock N: OpenCLIP module -> CLIPEncoderLayer module. */
const LAYER: Array<[string, string]> = [
  ['ln_1', 'layer_norm1'],
  ['ln_2', 'layer_norm2'],
  ['mlp.c_fc', 'mlp.fc1'],
  ['mlp.c_proj', 'mlp.fc2'],
  ['attn.out_proj', 'self_attn.out_proj'],
];

const TOP: Array<[string, string]> = [
  ['token_embedding', 'text_model.embeddings.token_embedding'],
  ['ln_final', 'text_model.final_layer_norm'],
];

/** The fused attention input projection's module path inside a resblock (its tensors `in_proj_weight`, `in_proj_bias`). */
export const IN_PROJ = 'attn.in_proj';

/** A CLIPTextModel module inside an OpenCLIP module: its path and its row part (of `parts`). */
export interface ClipPlace {
  hf: string;
  part: number;
  parts: number;
}

/** The CLIPTextModel modules an OpenCLIP text module path (after `model.`) is, stacked by rows when several; or undefined. */
export function openClipToHf(path: string): ClipPlace[] | undefined {
  const m = /^transformer\.resblocks\.(\d+)\.(.+)$/.exec(path);
  if (m) {
    const layer = `text_model.encoder.layers.${m[1]}`;
    if (m[2] === IN_PROJ) return ['q_proj', 'k_proj', 'v_proj'].map((p, part) => ({ hf: `${layer}.self_attn.${p}`, part, parts: 3 }));
    const hit = LAYER.find(([oc]) => oc === m[2]);
    return hit && [{ hf: `${layer}.${hit[1]}`, part: 0, parts: 1 }];
  }
  const hit = TOP.find(([oc]) => oc === path);
  return hit && [{ hf: hit[1], part: 0, parts: 1 }];
}
