/** Small LoRA files of every kohya / LyCORIS kind, in the layouts their code saves, for the low-rank tests. */
import { randomF32, TestTensor } from './builders';
import { writeSafetensorsFile } from './diffusion';

export const tensor = (name: string, shape: number[], seed: number, dtype: 'F16' | 'F32' = 'F32'): TestTensor => ({
  name,
  dtype,
  shape,
  data: randomF32(shape.reduce((a, b) => a * b, 1), seed, 0.3),
});
export const alpha = (m: string, a: number): TestTensor => ({ name: `${m}.alpha`, shape: [], data: new Float32Array([a]) });

/** One module of each LyCORIS / kohya kind, in kohya naming, with the shapes their code saves. */
/** `ia3`: with an (IA)³ module, which has no factor form. */
export function kohyaZoo(file: string, ia3 = true): string {
  const u = 'lora_unet_down_blocks_0';
  return writeSafetensorsFile(file, [
    // kohya LoRA on a Linear, alpha 3 / r 4; and on a Conv2d 3x3 (down [r, in, 3, 3], up [out, r, 1, 1]).
    tensor(`${u}_attentions_0_proj_in.lora_down.weight`, [4, 12], 1),
    tensor(`${u}_attentions_0_proj_in.lora_up.weight`, [10, 4], 2),
    alpha(`${u}_attentions_0_proj_in`, 3),
    tensor(`${u}_resnets_0_conv1.lora_down.weight`, [3, 6, 3, 3], 3, 'F16'),
    tensor(`${u}_resnets_0_conv1.lora_up.weight`, [8, 3, 1, 1], 4, 'F16'),
    alpha(`${u}_resnets_0_conv1`, 1.5),
    // LoCon with a Tucker core: down [r, in, 1, 1], mid [r, r, 3, 3], up [out, r, 1, 1].
    tensor(`${u}_resnets_0_conv2.lora_down.weight`, [3, 8, 1, 1], 5),
    tensor(`${u}_resnets_0_conv2.lora_mid.weight`, [3, 3, 3, 3], 6),
    tensor(`${u}_resnets_0_conv2.lora_up.weight`, [8, 3, 1, 1], 7),
    alpha(`${u}_resnets_0_conv2`, 2),
    // LoHa on a Linear (rank 3 x 2 = 6 ≤ min(out, in)); and one whose r₁·r₂ = 16 exceeds its 10 rows.
    tensor(`${u}_attentions_0_proj_out.hada_w1_a`, [10, 3], 8),
    tensor(`${u}_attentions_0_proj_out.hada_w1_b`, [3, 12], 9),
    tensor(`${u}_attentions_0_proj_out.hada_w2_a`, [10, 2], 10),
    tensor(`${u}_attentions_0_proj_out.hada_w2_b`, [2, 12], 11),
    alpha(`${u}_attentions_0_proj_out`, 1),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_q.hada_w1_a`, [10, 4], 12),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_q.hada_w1_b`, [4, 14], 13),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_q.hada_w2_a`, [10, 4], 14),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_q.hada_w2_b`, [4, 14], 15),
    // LoHa with Tucker cores on a 3x3 conv: w_a [r, out], w_b [r, in], t [r, r, 3, 3].
    tensor(`${u}_downsamplers_0_conv.hada_w1_a`, [2, 8], 16),
    tensor(`${u}_downsamplers_0_conv.hada_w1_b`, [2, 8], 17),
    tensor(`${u}_downsamplers_0_conv.hada_t1`, [2, 2, 3, 3], 18),
    tensor(`${u}_downsamplers_0_conv.hada_w2_a`, [2, 8], 19),
    tensor(`${u}_downsamplers_0_conv.hada_w2_b`, [2, 8], 20),
    tensor(`${u}_downsamplers_0_conv.hada_t2`, [2, 2, 3, 3], 21),
    alpha(`${u}_downsamplers_0_conv`, 4),
    // LoKr: whole w1 [2, 3] with factored w2 [5, r 2, 4]; both factored; a Tucker w2 on a 3x3 conv.
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_k.lokr_w1`, [2, 3], 22),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_k.lokr_w2_a`, [5, 2], 23),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_k.lokr_w2_b`, [2, 4], 24),
    alpha(`${u}_attentions_0_transformer_blocks_0_attn1_to_k`, 1),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_v.lokr_w1_a`, [4, 2], 25, 'F16'),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_v.lokr_w1_b`, [2, 3], 26, 'F16'),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_v.lokr_w2_a`, [3, 2], 27, 'F16'),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn1_to_v.lokr_w2_b`, [2, 5], 28, 'F16'),
    alpha(`${u}_attentions_0_transformer_blocks_0_attn1_to_v`, 3),
    tensor(`${u}_resnets_1_conv1.lokr_w1`, [2, 2], 29),
    tensor(`${u}_resnets_1_conv1.lokr_w2_a`, [2, 4], 30),
    tensor(`${u}_resnets_1_conv1.lokr_w2_b`, [2, 3], 31),
    tensor(`${u}_resnets_1_conv1.lokr_t2`, [2, 2, 3, 3], 32),
    // A whole LoKr (neither factor split: scale 1), and a full diff with its bias.
    tensor(`${u}_attentions_0_transformer_blocks_0_attn2_to_q.lokr_w1`, [2, 2], 33),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn2_to_q.lokr_w2`, [4, 6], 34),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn2_to_k.diff`, [9, 7], 35),
    tensor(`${u}_attentions_0_transformer_blocks_0_attn2_to_k.diff_b`, [9], 36),
    // (IA)³ scales the base: named, not in the spectrum.
    ...(ia3 ? [tensor(`${u}_attentions_0_transformer_blocks_0_attn2_to_v.weight`, [9], 37)] : []),
  ]);
}

