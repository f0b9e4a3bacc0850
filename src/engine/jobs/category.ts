/**
 * Tensor categories for compare reports until the census classifier lands (src/engine/census/):
 * attention | mlp | norm | embedding | final_norm | other, as in the census report.
 */
export function tensorCategory(name: string): string {
  const inLayer = /\.(layers|h|block|blocks|layer)\.\d+\./.test(name);
  if (/(embed|wte|wpe|lm_head|word_embeddings|position_embeddings|shared\.weight)/.test(name)) return 'embedding';
  if (/(norm|ln_|layernorm|LayerNorm)/i.test(name)) return inLayer ? 'norm' : 'final_norm';
  if (/(attn|attention|q_proj|k_proj|v_proj|o_proj|q_lin|k_lin|v_lin|out_lin|query|key|value)/.test(name)) return 'attention';
  if (/(mlp|ffn|fc|gate_proj|up_proj|down_proj|c_fc|intermediate|output\.dense|lin1|lin2)/.test(name)) return 'mlp';
  return 'other';
}
