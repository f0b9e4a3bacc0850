/**
 * The two names of a FLUX transformer module: Black Forest Labs' single file (`double_blocks.3.img_attn.qkv`,
 * the names kohya-ss's FLUX LoRAs use) and diffusers' FluxTransformer2DModel (`transformer_blocks.3.attn.to_q`),
 * as diffusers' FLUX conversion relates them. Fused BFL projections are several diffusers modules stacked by
 * rows: `img_attn.qkv` is to_q, to_k, to_v; a single block's `linear1` is to_q, to_k, to_v and proj_mlp.
 * `final_layer.adaLN_modulation.1` is left out: diffusers' norm_out swaps its two halves, which no row slice
 * expresses. Both directions are read: a BFL name onto a diffusers transformer, and a diffusers name onto a
 * BFL single file (its module then one row block of the fused BFL tensor).
 */

/** Inside double block N: BFL name -> the diffusers module(s), in row order. */
const DOUBLE: Array<[string, string[]]> = [
  ['img_attn.qkv', ['attn.to_q', 'attn.to_k', 'attn.to_v']],
  ['img_attn.proj', ['attn.to_out.0']],
  ['img_mlp.0', ['ff.net.0.proj']],
  ['img_mlp.2', ['ff.net.2']],
  ['img_mod.lin', ['norm1.linear']],
  ['txt_attn.qkv', ['attn.add_q_proj', 'attn.add_k_proj', 'attn.add_v_proj']],
  ['txt_attn.proj', ['attn.to_add_out']],
  ['txt_mlp.0', ['ff_context.net.0.proj']],
  ['txt_mlp.2', ['ff_context.net.2']],
  ['txt_mod.lin', ['norm1_context.linear']],
];

/** Inside single block N. */
const SINGLE: Array<[string, string[]]> = [
  ['linear1', ['attn.to_q', 'attn.to_k', 'attn.to_v', 'proj_mlp']],
  ['linear2', ['proj_out']],
  ['modulation.lin', ['norm.linear']],
];

const TOP: Array<[string, string[]]> = [
  ['img_in', ['x_embedder']],
  ['txt_in', ['context_embedder']],
  ['time_in.in_layer', ['time_text_embed.timestep_embedder.linear_1']],
  ['time_in.out_layer', ['time_text_embed.timestep_embedder.linear_2']],
  ['vector_in.in_layer', ['time_text_embed.text_embedder.linear_1']],
  ['vector_in.out_layer', ['time_text_embed.text_embedder.linear_2']],
  ['guidance_in.in_layer', ['time_text_embed.guidance_embedder.linear_1']],
  ['guidance_in.out_layer', ['time_text_embed.guidance_embedder.linear_2']],
  ['final_layer.linear', ['proj_out']],
];

/** Where a diffusers FLUX module sits in BFL's naming: the BFL module and its row part (of `parts`). */
export interface BflPlace {
  bfl: string;
  part: number;
  parts: number;
}

/** The BFL module a diffusers FluxTransformer2DModel module path is (a part of), or undefined. */
export function diffusersToBfl(path: string): BflPlace | undefined {
  const find = (table: Array<[string, string[]]>, local: string, prefix: string): BflPlace | undefined => {
    for (const [bfl, parts] of table) {
      const part = parts.indexOf(local);
      if (part >= 0) return { bfl: prefix + bfl, part, parts: parts.length };
    }
    return undefined;
  };
  const m = /^(transformer_blocks|single_transformer_blocks)\.(\d+)\.(.+)$/.exec(path);
  if (m) return m[1] === 'transformer_blocks' ? find(DOUBLE, m[3], `double_blocks.${m[2]}.`) : find(SINGLE, m[3], `single_blocks.${m[2]}.`);
  return find(TOP, path, '');
}

/** A diffusers FLUX module in a BFL module: its path and its row part (of `parts`, q, k, v then an MLP's rest). */
export interface DiffusersPlace {
  diffusers: string;
  part: number;
  parts: number;
}

/** The diffusers FluxTransformer2DModel modules a BFL module path is (stacked by rows when several), or undefined. */
export function bflToDiffusers(path: string): DiffusersPlace[] | undefined {
  const find = (table: Array<[string, string[]]>, local: string, prefix: string): DiffusersPlace[] | undefined => {
    const hit = table.find(([bfl]) => bfl === local);
    return hit?.[1].map((d, part) => ({ diffusers: prefix + d, part, parts: hit[1].length }));
  };
  const m = /^(double_blocks|single_blocks)\.(\d+)\.(.+)$/.exec(path);
  if (m) return m[1] === 'double_blocks' ? find(DOUBLE, m[3], `transformer_blocks.${m[2]}.`) : find(SINGLE, m[3], `single_transformer_blocks.${m[2]}.`);
  return find(TOP, path, '');
}
