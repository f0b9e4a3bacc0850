/**
 * Which workspace folders are checkpoints, decided from the marker files found in them. No `vscode`
 * import (unit tested): the scanner passes the paths that its file search returned.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { cachedSnapshot, isRepoId } from '../../shared/weights/hfCache';
import { ANY_ADAPTER_WEIGHTS, CHECKPOINT_MARKERS, MODEL_WEIGHTS, SHARD_INDEXES } from '../../shared/weights/files';

/** The files whose presence makes a folder an adapter or a model (searched for in the workspace). */
export const MARKER_FILES = CHECKPOINT_MARKERS;

export interface RecognisedFolders {
  /** Adapter folders: adapter_config.json beside adapter_model.safetensors (or .bin), or mlx-lm's adapters.safetensors. */
  adapters: string[];
  /** Hugging Face model folders: model.safetensors, pytorch_model.bin or a sharded index of either. */
  models: string[];
  /** Adapter and model folders whose weights are PyTorch pickles only (what `convert` turns into safetensors). */
  pickles: string[];
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
  const pickles: string[] = [];
  for (const [dir, files] of byDir) {
    if (files.has('adapter_config.json') && ANY_ADAPTER_WEIGHTS.some((f) => files.has(f))) adapters.push(dir);
    else if ([...MODEL_WEIGHTS, ...SHARD_INDEXES].some((f) => files.has(f))) models.push(dir);
    else continue;
    if (![...ANY_ADAPTER_WEIGHTS, ...MODEL_WEIGHTS, ...SHARD_INDEXES].some((f) => files.has(f) && f.includes('safetensors'))) pickles.push(dir);
  }
  return { adapters: adapters.sort(), models: models.sort(), pickles: pickles.sort() };
}

/**
 * Whether a file-system event can change the recognised folders. A checkpoint folder moved or copied in
 * whole (an atomic rename, `mv`, a download tool's final rename) is reported as one event for the folder,
 * none for its marker files, so a new folder counts; a deleted folder likewise, when it holds (or is) a
 * known checkpoint folder.
 */
export function eventMatters(p: string, created: boolean, known: RecognisedFolders, isDirectory: (p: string) => boolean): boolean {
  if ((MARKER_FILES as readonly string[]).includes(path.basename(p))) return true;
  if (created) return isDirectory(p);
  return [...known.adapters, ...known.models].some((f) => f === p || f.startsWith(p + path.sep));
}

/** Expands `${name}` variables of the output folder pattern; unknown names are left as written. */
export function expandPattern(pattern: string, vars: Record<string, string>): string {
  return pattern.replace(/\$\{(\w+)\}/g, (whole, name: string) => vars[name] ?? whole);
}

/**
 * The model folder an adapter was trained on, from its `base_model_name_or_path` ("gpt2",
 * "Qwen/Qwen2.5-0.5B-Instruct" or a local path): the folder with that path, else the repository's
 * snapshot in the Hugging Face cache (`hub`; refs/main, else the newest), else a folder with that last name.
 */
export function guessBase(baseModelNameOrPath: unknown, models: string[], hub?: string): string | undefined {
  if (typeof baseModelNameOrPath !== 'string' || baseModelNameOrPath === '') return undefined;
  const exact = models.find((m) => path.resolve(m) === path.resolve(baseModelNameOrPath));
  if (exact) return exact;
  const cached = hub !== undefined && isRepoId(baseModelNameOrPath) ? cachedSnapshot(baseModelNameOrPath, hub) : undefined;
  if (cached && folderKind(cached, fs.existsSync) === 'model') return cached;
  const last = baseModelNameOrPath.split(/[\\/]/).filter((s) => s !== '').pop()?.toLowerCase();
  return models.find((m) => path.basename(m).toLowerCase() === last);
}

/** What a folder holds, from its marker files on disk (for a folder given before the workspace scan is done). */
export function folderKind(dir: string, exists: (p: string) => boolean): 'adapter' | 'model' | undefined {
  const has = (f: string): boolean => exists(path.join(dir, f));
  if (has('adapter_config.json') && ANY_ADAPTER_WEIGHTS.some(has)) return 'adapter';
  if ([...MODEL_WEIGHTS, ...SHARD_INDEXES].some(has)) return 'model';
  return undefined;
}

/**
 * Marker files of checkpoints under folders outside the workspace (the Hugging Face cache's snapshots,
 * `loraLens.modelRoots`), found by walking at most `depth` levels down. Entries are stat'ed through
 * their links: a cache snapshot's files are links into its blobs/. Unreadable folders are skipped.
 */
export function markerFilesUnder(roots: string[], depth = 4): string[] {
  const markers = new Set(MARKER_FILES);
  const found: string[] = [];
  const seen = new Set<string>();
  const walk = (dir: string, left: number): void => {
    let real: string;
    let names: string[];
    try {
      real = fs.realpathSync(dir);
      if (seen.has(real)) return;
      seen.add(real);
      names = fs.readdirSync(dir);
    } catch {
      return;
    }
    for (const n of names) {
      if (n.startsWith('.') || n === 'node_modules' || n === 'blobs') continue;
      const p = path.join(dir, n);
      if (markers.has(n)) found.push(p);
      else if (left > 0 && isDirectory(p)) walk(p, left - 1);
    }
  };
  for (const r of roots) walk(r, depth);
  return found;
}

function isDirectory(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}
