/**
 * `lora-lens demo`: writes a small StarCoder2-shaped checkpoint (StarCoder2-3B's 30-layer layout, 483
 * tensors, at hidden size 192) and PEFT LoRA adapters in the real on-disk formats, then runs the engine's
 * own commands on them, printing each command line before its output so that a newcomer sees both
 * what LoRA Lens answers and how to ask it.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LensError } from './errors';
import { writeSyntheticAdapter } from './synthetic/adapter';
import { STARCODER2_3B } from './synthetic/configs';
import { writeSyntheticModel } from './synthetic/model';

/** StarCoder2-3B's layout (30 layers, GQA 24:2 heads, biases, tied embeddings) at a size that writes in a second. */
const DEMO_CONFIG: Record<string, unknown> = {
  ...STARCODER2_3B,
  _name_or_path: 'lora-lens-demo/starcoder2-tiny',
  hidden_size: 192,
  intermediate_size: 768,
  num_attention_heads: 24,
  num_key_value_heads: 2,
  vocab_size: 2048,
};

const QKVO = ['q_proj', 'k_proj', 'v_proj', 'o_proj'];

export interface DemoStep {
  title: string;
  args: string[];
}

/** Writes the demo checkpoints under `root` (which must not exist yet or be a previous demo's) and returns the steps to run. */
export function prepareDemo(root: string): DemoStep[] {
  const marker = path.join(root, '.lora-lens-demo');
  if (fs.existsSync(root)) {
    if (!fs.existsSync(marker)) throw new LensError(root, 'exists and is not a LoRA Lens demo folder; give another --out');
    fs.rmSync(root, { recursive: true, force: true });
  }
  fs.mkdirSync(root, { recursive: true });
  fs.writeFileSync(marker, 'written by lora-lens demo; safe to delete\n');
  const p = (...parts: string[]): string => path.join(root, ...parts);

  writeSyntheticModel(p('base'), DEMO_CONFIG, { dtype: 'F32', seed: 1 });
  writeSyntheticAdapter(p('adapter'), DEMO_CONFIG, { targets: QKVO, r: 8, alpha: 16, seed: 2 });
  // A dictionary of three adapters for UNMERGE, and one outside it.
  for (const [name, seed] of [['code', 11], ['math', 12], ['chat', 13], ['unknown', 14]] as const) {
    writeSyntheticAdapter(p('dictionary', name), DEMO_CONFIG, { targets: QKVO, r: 8, alpha: 16, seed });
  }

  const dict = ['code', 'math', 'chat'].map((n) => p('dictionary', n));
  return [
    { title: 'What is in the checkpoint, and which tensors the adapter targets', args: ['census', p('base'), '--adapter', p('adapter')] },
    { title: "The adapter's exact trainable parameters (GQA makes k/v narrower than q)", args: ['estimate', p('base'), '--adapter', p('adapter')] },
    { title: 'Merge the adapter at bf16, as PEFT merge_and_unload() would', args: ['merge', '--base', p('base'), '--adapter', p('adapter'), '--out', p('merged-bf16'), '--dtype', 'bf16'] },
    { title: "The merged model's task vector: cast artifacts make every tensor non-zero", args: ['extract', '--base', p('base'), '--finetuned', p('merged-bf16'), '--out', p('task-vector-bf16.safetensors')] },
    { title: 'What merging at fp16 / bf16 loses, without writing a model', args: ['precision', '--base', p('base'), '--adapter', p('adapter'), '--dtypes', 'fp16,bf16'] },
    { title: 'Is base + adapter really the merged model? Merge, extract, compare and precision per dtype', args: ['validate', '--base', p('base'), '--adapter', p('adapter'), '--out', p('validate'), '--dtypes', 'fp32,fp16,bf16'] },
    { title: 'UNMERGE: a model fine-tuned with two adapters of the dictionary (merged one after the other at fp32)', args: ['merge', '--base', p('base'), '--adapter', dict[1], '--out', p('with-math'), '--dtype', 'fp32'] },
    { title: '', args: ['merge', '--base', p('with-math'), '--adapter', dict[2], '--out', p('math-and-chat'), '--dtype', 'fp32'] },
    { title: 'UNMERGE phase 3: one unified top-k mask over the dictionary', args: ['mask', '--base', p('base'), '--adapters', ...dict, '--budget', '12000', '--out', p('mask')] },
    { title: 'UNMERGE phase 4: which adapters went into the merged model, with what weights', args: ['decompose', '--mask', p('mask'), '--base', p('base'), '--dictionary', ...dict, '--target', p('math-and-chat'), '--method', 'nnls'] },
    { title: 'An adapter outside the dictionary cannot be decomposed, and the report says so', args: ['decompose', '--mask', p('mask'), '--base', p('base'), '--dictionary', ...dict, '--target', p('dictionary', 'unknown'), '--method', 'omp'] },
  ];
}

/** Runs the demo through `run` (the CLI's main); resolves to the first failing exit code, or 0. */
export async function runDemo(argv: string[], run: (argv: string[]) => Promise<number>): Promise<number> {
  const outAt = argv.indexOf('--out');
  const root = path.resolve(outAt >= 0 && argv[outAt + 1] ? argv[outAt + 1] : '.demo');
  const rel = (a: string): string => (path.isAbsolute(a) ? path.relative(process.cwd(), a) || '.' : a);
  const say = (s: string): boolean => process.stdout.write(s + '\n');
  let steps: DemoStep[];
  try {
    const t0 = performance.now();
    steps = prepareDemo(root);
    say(`LoRA Lens demo: wrote a StarCoder2-shaped fp32 model (30 layers, 483 tensors), a q/k/v/o LoRA adapter (r=8)`);
    say(`and an UNMERGE dictionary of adapters under ${rel(root)}/ in ${((performance.now() - t0) / 1000).toFixed(1)} s, in the Hugging Face and PEFT formats.`);
  } catch (e) {
    process.stderr.write(`lora-lens demo: ${(e as Error).message}\n`);
    return 2;
  }
  for (const step of steps) {
    if (step.title) say(`\n== ${step.title}`);
    say(`$ lora-lens ${step.args.map(rel).join(' ')}`);
    const code = await run(step.args);
    if (code !== 0) return code;
  }
  say(`\nEverything above is in ${rel(root)}/: open it in VS Code with LoRA Lens for the census tree, the .safetensors viewer and the charts.`);
  return 0;
}
