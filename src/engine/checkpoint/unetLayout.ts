/**
 * The two names of a Stable Diffusion UNet module (SD 1.x / 2.x / SDXL): the original (LDM) layout of a
 * single-file checkpoint (`input_blocks.4.1.proj_in`, under `model.diffusion_model.`) and the diffusers
 * layout (`down_blocks.1.attentions.0.proj_in`), as diffusers' convert_original_stable_diffusion and
 * kohya's model_util relate them: two layers per down block and three per up block, so
 * input_blocks.{3i + j + 1} is layer j of down block i (`.0` its resnet, `.1` its attention) and
 * input_blocks.{3(i + 1)}.0.op its downsampler; output_blocks.{3i + j} is layer j of up block i, with the
 * upsampler after its last layer's resnet (and attention); middle_block.{0, 1, 2} is resnet, attention,
 * resnet. Attention blocks name their insides alike in both layouts; resnets and the top-level modules
 * differ by the tables below.
 */

/** Inside a resnet: LDM name -> diffusers name. */
const RESNET: Array<[string, string]> = [
  ['in_layers.0', 'norm1'],
  ['in_layers.2', 'conv1'],
  ['emb_layers.1', 'time_emb_proj'],
  ['out_layers.0', 'norm2'],
  ['out_layers.3', 'conv2'],
  ['skip_connection', 'conv_shortcut'],
];

/** Top-level modules: LDM name -> diffusers name (SDXL's `label_emb` is its added embedding). */
const TOP: Array<[string, string]> = [
  ['time_embed.0', 'time_embedding.linear_1'],
  ['time_embed.2', 'time_embedding.linear_2'],
  ['label_emb.0.0', 'add_embedding.linear_1'],
  ['label_emb.0.2', 'add_embedding.linear_2'],
  ['input_blocks.0.0', 'conv_in'],
  ['out.0', 'conv_norm_out'],
  ['out.2', 'conv_out'],
];

const LAYERS_DOWN = 2;
const LAYERS_UP = 3;

/** `rest` inside a resnet or attention, from one layout's naming to the other's. */
function inner(kind: 'resnet' | 'attention', rest: string, toDiffusers: boolean): string | undefined {
  if (kind === 'attention') return rest;
  for (const [ldm, diff] of RESNET) {
    const [from, to] = toDiffusers ? [ldm, diff] : [diff, ldm];
    if (rest === from || rest.startsWith(`${from}.`)) return to + rest.slice(from.length);
  }
  return undefined;
}

function top(path: string, toDiffusers: boolean): string | undefined {
  for (const [ldm, diff] of TOP) {
    const [from, to] = toDiffusers ? [ldm, diff] : [diff, ldm];
    if (path === from || path.startsWith(`${from}.`)) return to + path.slice(from.length);
  }
  return undefined;
}

/** The diffusers name of an LDM UNet module path (without `model.diffusion_model.`), or undefined. */
export function ldmToDiffusers(path: string): string | undefined {
  const t = top(path, true);
  if (t !== undefined) return t;
  let m = /^input_blocks\.(\d+)\.(\d+)\.(.+)$/.exec(path);
  if (m) {
    const n = Number(m[1]) - 1;
    const [i, j] = [Math.floor(n / (LAYERS_DOWN + 1)), n % (LAYERS_DOWN + 1)];
    if (n < 0) return undefined;
    if (j === LAYERS_DOWN) return m[2] === '0' && /^op(\.|$)/.test(m[3]) ? `down_blocks.${i}.downsamplers.0.conv${m[3].slice(2)}` : undefined;
    const kind = m[2] === '0' ? 'resnet' : m[2] === '1' ? 'attention' : undefined;
    const rest = kind && inner(kind, m[3], true);
    return rest === undefined ? undefined : `down_blocks.${i}.${kind === 'resnet' ? 'resnets' : 'attentions'}.${j}.${rest}`;
  }
  m = /^output_blocks\.(\d+)\.(\d+)\.(.+)$/.exec(path);
  if (m) {
    const n = Number(m[1]);
    const [i, j] = [Math.floor(n / LAYERS_UP), n % LAYERS_UP];
    // The upsampler is the layer's last child: `.1.conv` after a resnet alone, `.2.conv` after an attention.
    if (/^conv(\.|$)/.test(m[3]) && m[2] !== '0') return j === LAYERS_UP - 1 ? `up_blocks.${i}.upsamplers.0.${m[3]}` : undefined;
    const kind = m[2] === '0' ? 'resnet' : m[2] === '1' ? 'attention' : undefined;
    const rest = kind && inner(kind, m[3], true);
    return rest === undefined ? undefined : `up_blocks.${i}.${kind === 'resnet' ? 'resnets' : 'attentions'}.${j}.${rest}`;
  }
  m = /^middle_block\.(\d)\.(.+)$/.exec(path);
  if (m) {
    const kind = m[1] === '1' ? 'attention' : 'resnet';
    const rest = inner(kind, m[2], true);
    if (rest === undefined) return undefined;
    return m[1] === '1' ? `mid_block.attentions.0.${rest}` : m[1] === '0' || m[1] === '2' ? `mid_block.resnets.${Number(m[1]) / 2}.${rest}` : undefined;
  }
  return undefined;
}

/**
 * The LDM name of a diffusers UNet module path (without `unet.`), or undefined. `hasAttention(i)`: whether
 * up block i has attentions (its upsampler then follows them as the layer's third child).
 */
export function diffusersToLdm(path: string, hasAttention: (upBlock: number) => boolean): string | undefined {
  const t = top(path, false);
  if (t !== undefined) return t;
  let m = /^down_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$/.exec(path);
  if (m) {
    const rest = inner(m[2] === 'resnets' ? 'resnet' : 'attention', m[4], false);
    return rest === undefined ? undefined : `input_blocks.${Number(m[1]) * (LAYERS_DOWN + 1) + Number(m[3]) + 1}.${m[2] === 'resnets' ? 0 : 1}.${rest}`;
  }
  m = /^down_blocks\.(\d+)\.downsamplers\.0\.conv(\..+)?$/.exec(path);
  if (m) return `input_blocks.${(Number(m[1]) + 1) * (LAYERS_DOWN + 1)}.0.op${m[2] ?? ''}`;
  m = /^up_blocks\.(\d+)\.(resnets|attentions)\.(\d+)\.(.+)$/.exec(path);
  if (m) {
    const rest = inner(m[2] === 'resnets' ? 'resnet' : 'attention', m[4], false);
    return rest === undefined ? undefined : `output_blocks.${Number(m[1]) * LAYERS_UP + Number(m[3])}.${m[2] === 'resnets' ? 0 : 1}.${rest}`;
  }
  m = /^up_blocks\.(\d+)\.upsamplers\.0\.(conv(\..+)?)$/.exec(path);
  if (m) return `output_blocks.${Number(m[1]) * LAYERS_UP + LAYERS_UP - 1}.${hasAttention(Number(m[1])) ? 2 : 1}.${m[2]}`;
  m = /^mid_block\.(resnets|attentions)\.(\d)\.(.+)$/.exec(path);
  if (m) {
    const rest = inner(m[1] === 'resnets' ? 'resnet' : 'attention', m[3], false);
    if (rest === undefined) return undefined;
    return m[1] === 'attentions' ? `middle_block.1.${rest}` : `middle_block.${Number(m[2]) * 2}.${rest}`;
  }
  return undefined;
}
