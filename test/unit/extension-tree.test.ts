/** The Parameter Census tree built from census and compare reports (src/extension/census/treeModel.ts). */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as path from 'node:path';
import { formatBytes, formatCount, formatInt } from '../../src/shared/format';
import { CheckpointEntry, checkpointNode, comparisonByName, formatMetric, TreeNode } from '../../src/extension/census/treeModel';
import { censusJob } from '../../src/engine/jobs/census';
import { quietContext } from '../../src/engine/util/job';
import { tmpDir } from './helpers/builders';
import { clipTextTensors, sd15UnetTensors, writePipeline, writeSafetensorsFile } from './helpers/diffusion';

const LAYERS = 30;
/** A StarCoder2-like census report: 30 layers x (4 attention projections with bias + 4 MLP/norm) + embedding + final norm. */
function report(): unknown {
  const tensors: unknown[] = [{ name: 'model.embed_tokens.weight', dtype: 'BF16', shape: [49152, 3072], numel: 49152 * 3072, category: 'embedding', layer: null, projection: null, loraTarget: false }];
  for (let l = 0; l < LAYERS; l++) {
    for (const p of ['q_proj', 'k_proj', 'v_proj', 'o_proj']) {
      for (const kind of ['weight', 'bias']) {
        const shape = kind === 'weight' ? [3072, 3072] : [3072];
        tensors.push({
          name: `model.layers.${l}.self_attn.${p}.${kind}`,
          dtype: 'BF16',
          shape,
          numel: shape.reduce((a, b) => a * b, 1),
          category: 'attention',
          layer: l,
          projection: p,
          loraTarget: kind === 'weight',
        });
      }
    }
    for (const n of ['mlp.c_fc.weight', 'mlp.c_proj.weight']) {
      tensors.push({ name: `model.layers.${l}.${n}`, dtype: 'BF16', shape: [12288, 3072], numel: 12288 * 3072, category: 'mlp', layer: l, projection: n.split('.')[1], loraTarget: false });
    }
    for (const n of ['input_layernorm.weight', 'post_attention_layernorm.weight']) {
      tensors.push({ name: `model.layers.${l}.${n}`, dtype: 'BF16', shape: [3072], numel: 3072, category: 'norm', layer: l, projection: null, loraTarget: false });
    }
  }
  tensors.push({ name: 'model.norm.weight', dtype: 'BF16', shape: [3072], numel: 3072, category: 'final_norm', layer: null, projection: null, loraTarget: false });
  return { kind: 'model', path: '/m/starcoder', summary: { tensors: tensors.length, bytes: 6_000_000_000 }, tensors };
}

const child = (n: TreeNode, label: RegExp): TreeNode => {
  const c = n.children.find((x) => label.test(x.label));
  assert.ok(c, `no child ${label} under ${n.label}: ${n.children.map((x) => x.label).join(' | ')}`);
  return c;
};

test('checkpoint -> categories -> layers -> tensors, with counts in the labels', () => {
  const root = checkpointNode({ path: '/m/starcoder', report: report() });
  assert.equal(root.label, 'starcoder');
  assert.equal(root.contextValue, 'checkpoint.model');
  assert.match(root.description, /^model · 362 tensors · /);
  assert.deepEqual(
    root.children.map((c) => c.label),
    ['Embeddings — 1 tensor', 'Attention — 240 tensors, 120 LoRA targets', 'MLP — 60 tensors', 'Norms — 60 tensors', 'Final norm — 1 tensor'],
  );
  const attention = child(root, /^Attention/);
  assert.equal(attention.children.length, LAYERS);
  assert.equal(attention.children[0].label, 'Layer 0 — 8 tensors, 4 LoRA targets');
  assert.equal(attention.children[29].label, 'Layer 29 — 8 tensors, 4 LoRA targets');
  const q = attention.children[3].children[0];
  assert.equal(q.kind, 'tensor');
  assert.equal(q.label, 'self_attn.q_proj.weight');
  assert.equal(q.tensor, 'model.layers.3.self_attn.q_proj.weight');
  assert.equal(q.description, '3072×3072 · BF16 · 9,437,184 · LoRA');
  assert.equal(q.contextValue, 'tensor.loraTarget');
  assert.equal(q.icon, 'target');
  assert.match(q.tooltip, /\| LoRA target \| yes \|/);
  const bias = attention.children[3].children[1];
  assert.equal(bias.description, '3072 · BF16 · 3,072');
  assert.equal(bias.contextValue, 'tensor');
  // Tensors outside the layers sit directly under their category.
  assert.equal(child(root, /^Embeddings/).children[0].label, 'model.embed_tokens.weight');
  // Ids are unique: the view keeps expansion state by them.
  const ids: string[] = [];
  const walk = (n: TreeNode): void => {
    ids.push(n.id);
    n.children.forEach(walk);
  };
  walk(root);
  assert.equal(new Set(ids).size, ids.length);
});

test('after a comparison: the cosine first, flagged below the threshold; changed-outside and unchanged tensors say so', () => {
  const cmp = comparisonByName({
    tensors: [
      { name: 'model.layers.0.self_attn.q_proj.weight', cosine: 0.99999912, maxAbsDiff: 3.2e-8, relFroErr: 1.1e-6, loraNorm: 0.4321, taskVectorNorm: 0.43209 },
      { name: 'model.layers.0.self_attn.k_proj.weight', cosine: null, maxAbsDiff: null, relFroErr: null, loraNorm: 0, taskVectorNorm: 0.01 },
      { name: 'model.layers.1.self_attn.q_proj.weight', cosine: 0.9747, maxAbsDiff: 1e-2, relFroErr: 0.2, loraNorm: 0.5, taskVectorNorm: 0.45 },
      { name: 'model.layers.1.self_attn.k_proj.weight', cosine: null, maxAbsDiff: 0.3, relFroErr: 1, loraNorm: 0.3, taskVectorNorm: 0 },
      { bogus: true },
    ],
  });
  assert.equal(cmp.size, 4);
  const entry: CheckpointEntry = { path: '/m/starcoder', report: report(), comparison: cmp };
  const attention = child(checkpointNode(entry), /^Attention/);
  const layer0 = child(attention, /^Layer 0 /);
  const q = child(layer0, /q_proj.weight/);
  assert.equal(q.description, 'cos 0.999999 · 3072×3072 · BF16 · 9,437,184 · LoRA');
  assert.equal(q.icon, 'target');
  assert.equal(q.iconColor, undefined);
  assert.match(q.tooltip, /cosine \(LoRA ΔW vs task vector\) \| 0\.99999912 \|/);
  assert.match(q.tooltip, /max abs difference \| 3\.200e-8 \|/);
  assert.match(q.tooltip, /‖ΔW‖ \(LoRA\) \| 0\.4321 \|/);
  assert.equal(child(layer0, /k_proj.weight/).description, 'changed outside the adapter (‖τ‖ 0.01000) · 3072×3072 · BF16 · 9,437,184 · LoRA');
  assert.doesNotMatch(child(layer0, /v_proj.weight/).description, /cos|changed/);
  const layer1 = child(attention, /^Layer 1 /);
  const q1 = child(layer1, /q_proj.weight/);
  assert.match(q1.description, /^⚠ cos 0\.974700 · /);
  assert.equal(q1.icon, 'warning');
  assert.equal(q1.iconColor, 'list.warningForeground');
  assert.match(q1.tooltip, /below 0\.9999/);
  assert.match(child(layer1, /k_proj.weight/).description, /^⚠ unchanged in the merged model · /);
  // A lower threshold (the loraLens.cosineThreshold setting) stops flagging 0.9747.
  const relaxed = child(child(child(checkpointNode({ ...entry, cosineThreshold: 0.97 }), /^Attention/), /^Layer 1 /), /q_proj.weight/);
  assert.equal(relaxed.icon, 'target');
});

test('a malformed report is refused; odd fields fall back', () => {
  assert.throws(() => checkpointNode({ path: '/x', report: { summary: {} } }), /no tensors/);
  const root = checkpointNode({ path: '/x/file.safetensors', report: { tensors: [{ name: 'w', shape: [2, 3], category: 'weird' }] } });
  assert.equal(root.children[0].label, 'Other — 1 tensor');
  assert.equal(root.children[0].children[0].description, '2×3 · ? · 6');
});

test('an image model: components, then UNet blocks in model order, then attention vs resnet vs time embedding', () => {
  const root = tmpDir();
  const pipe = writePipeline(path.join(root, 'sd15'), sd15UnetTensors({ channels: [8, 16, 32, 32], cross: 12, latent: 4 }), clipTextTensors({ hidden: 12, layers: 2, intermediate: 24, vocab: 50, positions: 7 }));
  const lora = writeSafetensorsFile(path.join(root, 'lora', 'l.safetensors'), [
    { name: 'lora_unet_down_blocks_1_resnets_0_conv1.lora_down.weight', shape: [2, 8, 3, 3] },
    { name: 'lora_unet_down_blocks_1_resnets_0_conv1.lora_up.weight', shape: [16, 2, 1, 1] },
  ]);
  const tree = checkpointNode({ path: pipe, adapter: lora, report: censusJob({ path: pipe, adapter: lora }, quietContext()) });
  assert.deepEqual(tree.children.map((c) => [c.kind, c.label.split(' — ')[0]]), [
    ['component', 'Text encoder'],
    ['component', 'UNet'],
  ]);
  const unet = child(tree, /^UNet/);
  const blocks = unet.children.filter((c) => c.kind === 'block').map((c) => c.label.split(' — ')[0]);
  assert.deepEqual(blocks, ['Down block 0', 'Down block 1', 'Down block 2', 'Down block 3', 'Mid block', 'Up block 0', 'Up block 1', 'Up block 2', 'Up block 3']);
  assert.ok(child(unet, /^Time embedding — 4 tensors/).children.every((t) => t.tensor!.startsWith('unet.time_embedding.')));
  const down1 = child(unet, /^Down block 1 — .*1 LoRA target/);
  assert.deepEqual(down1.children.map((c) => c.label.split(' — ')[0]), ['Attention', 'ResNets', 'MLP', 'Norms']);
  const conv1 = child(child(down1, /^ResNets/), /^resnets\.0\.conv1\.weight$/);
  assert.deepEqual([conv1.tensor, conv1.contextValue], ['unet.down_blocks.1.resnets.0.conv1.weight', 'tensor.loraTarget']);
  assert.match(conv1.tooltip, /\| block \| down\.1 \|/);
  const te = child(tree, /^Text encoder/);
  assert.deepEqual(te.children.filter((c) => c.kind === 'block').map((c) => c.label.split(' — ')[0]), ['Layer 0', 'Layer 1']);
});

test('number formats', () => {
  assert.equal(formatCount(3_030_000_000), '3.03 B');
  assert.equal(formatCount(999_999), '1.00 M');
  assert.equal(formatCount(4096), '4.1 K');
  assert.equal(formatCount(512), '512');
  assert.equal(formatCount(12_345_678), '12.35 M');
  assert.equal(formatCount(999_960), '1.00 M', 'the unit is chosen after rounding');
  assert.equal(formatCount(2.5e12), '2.50 T');
  assert.equal(formatMetric(null), 'n/a');
  assert.equal(formatMetric(1.5e-7), '1.500e-7');
  assert.equal(formatMetric(0.123456), '0.1235');
  // One byte format for the CLI's text, the tree, the viewer and the extension's prompts.
  assert.equal(formatBytes(512), '512 B');
  assert.equal(formatBytes(1536), '1.50 KiB');
  assert.equal(formatBytes(6 * 1024 ** 3 + 1), '6.00 GiB');
  assert.equal(formatInt(1234567), '1,234,567');
});
