// Checkpoints for the end-to-end tests, written into the test's temporary workspace: a tiny Llama-shaped
// model, a PEFT LoRA adapter on its q/v projections, the fine-tuned model equal to base + s·B@A (so the
// comparison is an exact match up to float32 rounding), and two large header-true models whose data are
// holes reading as zeros (1.6 GB apparent each, no disk used) for a job that runs long enough to cancel.
import fs from 'node:fs';
import path from 'node:path';

/** Deterministic values in [-scale, scale) (xorshift32). */
function values(n, seed, scale) {
  let s = seed >>> 0 || 1;
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    a[i] = (s / 4294967296 * 2 - 1) * scale;
  }
  return a;
}

function header(tensors) {
  const h = {};
  let off = 0;
  for (const t of tensors) {
    const bytes = t.shape.reduce((a, b) => a * b, 1) * 4;
    h[t.name] = { dtype: 'F32', shape: t.shape, data_offsets: [off, off + bytes] };
    off += bytes;
  }
  let json = Buffer.from(JSON.stringify(h));
  json = Buffer.concat([json, Buffer.alloc((8 - (json.length % 8)) % 8, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return { head: Buffer.concat([len, json]), dataBytes: off };
}

/** A safetensors file of F32 tensors; `data` undefined writes a hole (sparse zeros). */
function writeSafetensors(file, tensors) {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const { head, dataBytes } = header(tensors);
  const fd = fs.openSync(file, 'w');
  try {
    fs.writeSync(fd, head);
    if (tensors.every((t) => t.data)) for (const t of tensors) fs.writeSync(fd, Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength));
    else fs.ftruncateSync(fd, head.length + dataBytes);
  } finally {
    fs.closeSync(fd);
  }
}

function llamaConfig(h, inter, layers, vocab) {
  return {
    architectures: ['LlamaForCausalLM'], model_type: 'llama', hidden_size: h, intermediate_size: inter,
    num_hidden_layers: layers, num_attention_heads: 4, num_key_value_heads: 4, vocab_size: vocab,
    rms_norm_eps: 1e-6, tie_word_embeddings: false, torch_dtype: 'float32',
  };
}

function llamaTensors(cfg) {
  const h = cfg.hidden_size, i = cfg.intermediate_size;
  const t = [{ name: 'model.embed_tokens.weight', shape: [cfg.vocab_size, h] }];
  for (let l = 0; l < cfg.num_hidden_layers; l++) {
    const p = `model.layers.${l}`;
    t.push({ name: `${p}.input_layernorm.weight`, shape: [h] });
    for (const q of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) t.push({ name: `${p}.self_attn.${q}.weight`, shape: [h, h] });
    t.push({ name: `${p}.post_attention_layernorm.weight`, shape: [h] });
    t.push({ name: `${p}.mlp.gate_proj.weight`, shape: [i, h] }, { name: `${p}.mlp.up_proj.weight`, shape: [i, h] }, { name: `${p}.mlp.down_proj.weight`, shape: [h, i] });
  }
  t.push({ name: 'model.norm.weight', shape: [h] }, { name: 'lm_head.weight', shape: [cfg.vocab_size, h] });
  return t;
}

function writeModel(dir, cfg, tensors) {
  writeSafetensors(path.join(dir, 'model.safetensors'), tensors);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(cfg, null, 2));
}

/**
 * Writes models/tiny-llama, adapters/tiny-llama-qv, models/tiny-llama-finetuned, models/big-llama,
 * models/big-llama-ft and adapters/tiny-llama-r8 under `ws`; returns their paths.
 */
export function writeFixtures(ws) {
  const cfg = llamaConfig(64, 128, 2, 256);
  const base = llamaTensors(cfg).map((t, k) => ({ ...t, data: values(t.shape.reduce((a, b) => a * b, 1), 100 + k, 0.05) }));
  const dirs = {
    base: path.join(ws, 'models', 'tiny-llama'),
    adapter: path.join(ws, 'adapters', 'tiny-llama-qv'),
    finetuned: path.join(ws, 'models', 'tiny-llama-finetuned'),
    big: path.join(ws, 'models', 'big-llama'),
    bigFinetuned: path.join(ws, 'models', 'big-llama-ft'),
  };
  writeModel(dirs.base, cfg, base);

  const r = 4, alpha = 8, s = alpha / r, h = cfg.hidden_size;
  const lora = [];
  const delta = new Map();
  base.forEach((t, k) => {
    if (!/self_attn\.(q|v)_proj\.weight$/.test(t.name)) return;
    const module = t.name.replace(/\.weight$/, '');
    const A = values(r * h, 7 + k, 0.1), B = values(h * r, 9 + k, 0.1);
    lora.push({ name: `base_model.model.${module}.lora_A.weight`, shape: [r, h], data: A }, { name: `base_model.model.${module}.lora_B.weight`, shape: [h, r], data: B });
    const d = new Float32Array(h * h);
    for (let o = 0; o < h; o++) for (let c = 0; c < h; c++) {
      let acc = 0;
      for (let j = 0; j < r; j++) acc += B[o * r + j] * A[j * h + c];
      d[o * h + c] = s * acc;
    }
    delta.set(t.name, d);
  });
  writeSafetensors(path.join(dirs.adapter, 'adapter_model.safetensors'), lora);
  fs.writeFileSync(path.join(dirs.adapter, 'adapter_config.json'), JSON.stringify({
    peft_type: 'LORA', task_type: 'CAUSAL_LM', base_model_name_or_path: 'tiny-llama', r, lora_alpha: alpha, lora_dropout: 0,
    target_modules: ['q_proj', 'v_proj'], bias: 'none', fan_in_fan_out: false, use_rslora: false, use_dora: false,
    modules_to_save: null, rank_pattern: {}, alpha_pattern: {}, init_lora_weights: true, inference_mode: true,
  }, null, 2));
  writeModel(dirs.finetuned, cfg, base.map((t) => {
    const d = delta.get(t.name);
    return d ? { ...t, data: t.data.map((w, k) => w + d[k]) } : t;
  }));

  const bigCfg = llamaConfig(2048, 5632, 8, 1024);
  writeModel(dirs.big, bigCfg, llamaTensors(bigCfg));
  writeModel(dirs.bigFinetuned, bigCfg, llamaTensors(bigCfg));
  dirs.decaying = writeDecayingAdapter(ws);
  return dirs;
}

/**
 * adapters/tiny-llama-r8 under `ws`: rank 8 on all seven projections of models/tiny-llama, whose
 * singular values decay geometrically at a rate of each projection's own (q fast, down_proj slowly),
 * so its spectrum, energy curves and per-layer ranks differ from module to module as trained adapters'
 * do. Returns its path.
 */
export function writeDecayingAdapter(ws) {
  const cfg = llamaConfig(64, 128, 2, 256);
  const r = 8, alpha = 16;
  const decay = { q_proj: 0.3, k_proj: 0.45, v_proj: 0.6, o_proj: 0.7, gate_proj: 0.4, up_proj: 0.55, down_proj: 0.8 };
  const dir = path.join(ws, 'adapters', 'tiny-llama-r8');
  const lora = [];
  llamaTensors(cfg).forEach((t, k) => {
    const proj = /\.(\w+_proj)\.weight$/.exec(t.name)?.[1];
    if (!proj) return;
    const [out, inn] = t.shape;
    const module = t.name.replace(/\.weight$/, '');
    const A = values(r * inn, 300 + k, 0.2), B = values(out * r, 500 + k, 0.2);
    // Column j of B scaled by decay^j (the second layer a little slower): σⱼ of B@A falls about as fast.
    const rate = Math.min(0.95, decay[proj] + 0.1 * Number(/layers\.(\d+)/.exec(t.name)[1]));
    for (let o = 0; o < out; o++) for (let j = 0; j < r; j++) B[o * r + j] *= rate ** j;
    lora.push({ name: `base_model.model.${module}.lora_A.weight`, shape: [r, inn], data: A }, { name: `base_model.model.${module}.lora_B.weight`, shape: [out, r], data: B });
  });
  writeSafetensors(path.join(dir, 'adapter_model.safetensors'), lora);
  fs.writeFileSync(path.join(dir, 'adapter_config.json'), JSON.stringify({
    peft_type: 'LORA', task_type: 'CAUSAL_LM', base_model_name_or_path: 'tiny-llama', r, lora_alpha: alpha, lora_dropout: 0,
    target_modules: Object.keys(decay), bias: 'none', fan_in_fan_out: false, use_rslora: false, use_dora: false,
    modules_to_save: null, rank_pattern: {}, alpha_pattern: {}, init_lora_weights: true, inference_mode: true,
  }, null, 2));
  return dir;
}
