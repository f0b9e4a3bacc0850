/**
 * A diffusers pipeline folder (`model_index.json` beside `unet/`, `text_encoder/`, `transformer/`,
 * `vae/`, …) as one checkpoint: each component's weights, sharded or not, with its tensor names
 * prefixed by the component (`unet.down_blocks.0…`, `text_encoder.text_model…`), the prefixes PEFT and
 * diffusers use for LoRA on a pipeline.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LensError } from '../errors';
import { readJson } from './json';
import { shardFiles } from './shards';

export interface DiffusersComponent {
  /** The model_index.json key, which is also its subfolder: `unet`, `text_encoder_2`, `transformer`, `vae`. */
  name: string;
  dir: string;
  /** Weight file stem: `diffusion_pytorch_model` (diffusers models) or `model` (transformers models). */
  stem: string;
  files: string[];
  /** The shard index's tensor -> file map, when sharded. */
  weightMap?: Map<string, string>;
  /** Whether the component's weights were sharded (with an index). */
  sharded: boolean;
}

const STEMS = ['diffusion_pytorch_model', 'model'];

/** The weights of one component folder, or undefined when it holds none in safetensors (tokenizer, scheduler). */
function componentWeights(dir: string): { stem: string; files: string[]; weightMap?: Map<string, string> } | undefined {
  for (const stem of STEMS) {
    const index = path.join(dir, `${stem}.safetensors.index.json`);
    if (fs.existsSync(index)) return { stem, ...shardFiles(dir, index) };
    const single = path.join(dir, `${stem}.safetensors`);
    if (fs.existsSync(single)) return { stem, files: [single] };
  }
  // Only a variant (`diffusion_pytorch_model.fp16.safetensors`): read it when it is the one there.
  for (const stem of STEMS) {
    const variants = fs.readdirSync(dir).filter((f) => f.startsWith(`${stem}.`) && f.endsWith('.safetensors'));
    if (variants.length === 1) return { stem, files: [path.join(dir, variants[0])] };
    if (variants.length > 1) throw new LensError(dir, `several weight variants (${variants.sort().join(', ')}) and no ${stem}.safetensors: keep one`);
  }
  return undefined;
}

/** The weight components of a diffusers pipeline folder: every model_index.json entry whose folder has safetensors weights. */
export function findComponents(p: string): DiffusersComponent[] {
  const index = readJson(path.join(p, 'model_index.json'));
  const components: DiffusersComponent[] = [];
  for (const [name, entry] of Object.entries(index)) {
    // Components are `[library, class]` pairs; `_class_name`, `_diffusers_version` and null slots are not.
    if (name.startsWith('_') || !Array.isArray(entry) || entry[0] === null) continue;
    if (name.includes('/') || name.includes('\\') || name === '..' || name === '.') throw new LensError(path.join(p, 'model_index.json'), `component name ${JSON.stringify(name)} is not a folder name`);
    const dir = path.join(p, name);
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) continue;
    const w = componentWeights(dir);
    if (w) components.push({ name, dir, stem: w.stem, files: w.files, weightMap: w.weightMap, sharded: w.weightMap !== undefined });
  }
  if (components.length === 0) throw new LensError(p, 'diffusers folder (model_index.json) has no component with safetensors weights');
  return components;
}
