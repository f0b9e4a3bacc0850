/**
 * Which workspace folders are checkpoints, decided from the marker files found in them. No `vscode`
 * import (unit tested): the scanner passes the paths that its file search returned.
 */
import * as path from 'node:path';

/** The files whose presence makes a folder an adapter or a model (searched for in the workspace). */
export const MARKER_FILES = ['adapter_config.json', 'adapter_model.safetensors', 'model.safetensors', 'model.safetensors.index.json'] as const;

export interface RecognisedFolders {
  /** PEFT adapter folders: adapter_config.json beside adapter_model.safetensors. */
  adapters: string[];
  /** Hugging Face model folders: model.safetensors or a sharded index. */
  models: string[];
}

export function recogniseFolders(markerPaths: string[]): RecognisedFolders {
  const byDir = new Map<string, Set<string>>();
  for (const p of markerPaths) {
    const dir = path.dirname(p);
    const files = byDir.get(dir) ?? new Set<string>();
    files.add(path.basename(p));
    byDir.set(dir, files);
  }
  const adapters: string[] = [];
  const models: string[] = [];
  for (const [dir, files] of byDir) {
    if (files.has('adapter_config.json') && files.has('adapter_model.safetensors')) adapters.push(dir);
    else if (files.has('model.safetensors') || files.has('model.safetensors.index.json')) models.push(dir);
  }
  return { adapters: adapters.sort(), models: models.sort() };
}

/** Expands `${name}` variables of the output folder pattern; unknown names are left as written. */
export function expandPattern(pattern: string, vars: Record<string, string>): string {
  return pattern.replace(/\$\{(\w+)\}/g, (whole, name: string) => vars[name] ?? whole);
}

/**
 * The workspace model folder an adapter was trained on, from its `base_model_name_or_path`
 * ("Qwen/Qwen2.5-0.5B-Instruct" or a local path): the folder with that path, else with that last name.
 */
export function guessBase(baseModelNameOrPath: unknown, models: string[]): string | undefined {
  if (typeof baseModelNameOrPath !== 'string' || baseModelNameOrPath === '') return undefined;
  const exact = models.find((m) => path.resolve(m) === path.resolve(baseModelNameOrPath));
  if (exact) return exact;
  const last = baseModelNameOrPath.split(/[\\/]/).filter((s) => s !== '').pop()?.toLowerCase();
  return models.find((m) => path.basename(m).toLowerCase() === last);
}

/** What a folder holds, from its marker files on disk (for a folder given before the workspace scan is done). */
export function folderKind(dir: string, exists: (p: string) => boolean): 'adapter' | 'model' | undefined {
  const has = (f: string): boolean => exists(path.join(dir, f));
  if (has('adapter_config.json') && has('adapter_model.safetensors')) return 'adapter';
  if (has('model.safetensors') || has('model.safetensors.index.json')) return 'model';
  return undefined;
}
