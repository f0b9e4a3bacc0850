/**
 * Model configs for synthetic checkpoints, demos and benches, holding only the fields that decide the
 * tensor layout. Transcribed by hand from the public model cards / config.json values of the named
 * models, not copied files (the test fixtures in test/fixtures/base-configs are the copied ones).
 */

/** bigcode/starcoder2-3b: 30 layers, hidden 3072, 24 heads, 2 KV heads, tied embeddings; 483 tensors, ~3.03e9 elements. */
export const STARCODER2_3B: Record<string, unknown> = {
  architectures: ['Starcoder2ForCausalLM'],
  model_type: 'starcoder2',
  hidden_size: 3072,
  intermediate_size: 12288,
  num_hidden_layers: 30,
  num_attention_heads: 24,
  num_key_value_heads: 2,
  vocab_size: 49152,
  max_position_embeddings: 16384,
  norm_type: 'layer_norm',
  norm_epsilon: 1e-5,
  use_bias: true,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
};

/** google/gemma-3-270m(-it), text model: hidden 640, 4 heads of 256 (q 640 -> 1024), 1 KV head. */
export const GEMMA3_270M: Record<string, unknown> = {
  architectures: ['Gemma3ForCausalLM'],
  model_type: 'gemma3_text',
  hidden_size: 640,
  intermediate_size: 2048,
  num_hidden_layers: 18,
  num_attention_heads: 4,
  num_key_value_heads: 1,
  head_dim: 256,
  vocab_size: 262144,
  max_position_embeddings: 32768,
  tie_word_embeddings: true,
  torch_dtype: 'bfloat16',
};

