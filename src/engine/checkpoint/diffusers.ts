/**
 * A diffusers pipeline folder (`model_index.json` beside `unet/`, `text_encoder/`, `transformer/`,
 * `vae/`, …) as one checkpoint: each component's weights, sharded or not, with its tensor names
 * prefixed by the component (`unet.down_blocks.0…`, `text_encoder.text_model…`), the prefixes PEFT and
 * diffusers use for LoRA on a pipeline.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LensError } from '../errors';
import { FileHandles, TensorInfo } from '../safetensors/reader';
import { Checkpoint, fromFiles, readJson, shardFiles } from './checkpoint';

export interface DiffusersComponent {
  /** The model_index.json key, which is also its subfolder: `unet`, `text_encoder_2`, `transformer`, `vae`. */
  name: string;
  dir: string;
  /** Weight file stem: `diffusion_pytorch_model` (diffusers models) or `model` (transformers models). */
  stem: string;
  files: string[];
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

/** Opens a diffusers pipeline folder: every component of model_index.json that has safetensors weights. */
export function openDiffusers(p: string): Checkpoint {
  const index = readJson(path.join(p, 'model_index.json'));
  const tensors: TensorInfo[] = [];
  const byName = new Map<string, TensorInfo>();
  const files: string[] = [];
  const components: DiffusersComponent[] = [];
  for (const [name, entry] of Object.entries(index)) {
    // Components are `[library, class]` pairs; `_class_name`, `_diffusers_version` and null slots are not.
    if (name.startsWith('_') || !Array.isArray(entry) || entry[0] === null) continue;
    if (name.includes('/') || name.includes('\\') || name === '..' || name === '.') throw new LensError(path.join(p, 'model_index.json'), `component name ${JSON.stringify(name)} is not a folder name`);
    const dir = path.join(p, name);
    if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) continue;
    const w = componentWeights(dir);
    if (!w) continue;
    const c = fromFiles(dir, dir, w.files, w.weightMap, `${name}.`);
    for (const t of c.tensors) byName.set(t.name, t);
    tensors.push(...c.tensors);
    files.push(...w.files);
    components.push({ name, dir, stem: w.stem, files: w.files, sharded: w.weightMap !== undefined });
  }
  if (components.length === 0) throw new LensError(p, 'diffusers folder (model_index.json) has no component with safetensors weights');
  return { kind: 'diffusers', path: p, dir: p, tensors, byName, files, metadata: {}, handles: new FileHandles(), components };
}

/** The component a tensor of a diffusers checkpoint belongs to, and its name inside that component. */
export function componentOf(c: Checkpoint, name: string): { component: DiffusersComponent; local: string } {
  for (const component of c.components ?? []) {
    if (name.startsWith(`${component.name}.`)) return { component, local: name.slice(component.name.length + 1) };
  }
  throw new LensError(c.path, 'tensor belongs to no component of the diffusers folder', name);
}
