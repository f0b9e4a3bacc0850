/**
 * The Hugging Face hub cache, read from the disk alone (never the network): `$HF_HUB_CACHE`, else
 * `$HF_HOME/hub`, else `~/.cache/huggingface/hub`; each repository in `models--ORG--NAME/` with
 * `refs/main` (the commit of the main branch) and `snapshots/<commit>/`, whose files are symbolic links
 * into `../../blobs/`. Readers open them through the links (fs follows them). Shared by the engine
 * (an adapter's base_model_name_or_path) and the extension (pickers and the Explorer's scan).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

/** The hub cache folder the Hugging Face libraries use, from the same variables they read. */
export function hubCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.HF_HUB_CACHE) return env.HF_HUB_CACHE;
  if (env.HUGGINGFACE_HUB_CACHE) return env.HUGGINGFACE_HUB_CACHE;
  const home = env.HF_HOME ?? path.join(env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'), 'huggingface');
  return path.join(home, 'hub');
}

/** A repository id as the cache names its folder: `meta-llama/Llama-2-7b-hf` -> `models--meta-llama--Llama-2-7b-hf`. */
export function repoFolderName(repoId: string): string {
  return `models--${repoId.split('/').join('--')}`;
}

/** A Hub repository id (`gpt2`, `meta-llama/Llama-2-7b-hf`), as opposed to a local path. */
export function isRepoId(s: string): boolean {
  return /^[\w.-]+(\/[\w.-]+)?$/.test(s) && !s.startsWith('.') && !s.includes('--') && !s.endsWith('.');
}

function isDir(p: string): boolean {
  try {
    return fs.statSync(p).isDirectory();
  } catch {
    return false;
  }
}

/**
 * The snapshot folder of a cached repository: the one `refs/main` names, else the most recently
 * modified snapshot; undefined when the repository is not cached.
 */
export function cachedSnapshot(repoId: string, hub = hubCacheDir()): string | undefined {
  if (!isRepoId(repoId)) return undefined;
  const repo = path.join(hub, repoFolderName(repoId));
  const snapshots = path.join(repo, 'snapshots');
  if (!isDir(snapshots)) return undefined;
  try {
    const main = fs.readFileSync(path.join(repo, 'refs', 'main'), 'utf8').trim();
    if (/^[0-9a-f]{7,64}$/i.test(main) && isDir(path.join(snapshots, main))) return path.join(snapshots, main);
  } catch {
    // No refs/main (a revision downloaded by its commit): the newest snapshot.
  }
  const all = fs.readdirSync(snapshots).map((s) => path.join(snapshots, s)).filter(isDir);
  return all.sort((a, b) => fs.statSync(b).mtimeMs - fs.statSync(a).mtimeMs)[0];
}

/** Every snapshot folder of every cached model repository under `hub` (the roots to scan for checkpoints). */
export function cachedSnapshots(hub = hubCacheDir()): string[] {
  let repos: string[];
  try {
    repos = fs.readdirSync(hub).filter((d) => d.startsWith('models--'));
  } catch {
    return [];
  }
  const out: string[] = [];
  for (const r of repos) {
    const snapshots = path.join(hub, r, 'snapshots');
    if (!isDir(snapshots)) continue;
    for (const s of fs.readdirSync(snapshots)) if (isDir(path.join(snapshots, s))) out.push(path.join(snapshots, s));
  }
  return out.sort();
}

/** The repository id of a snapshot folder (`…/models--ORG--NAME/snapshots/REV`), for labels; undefined elsewhere. */
export function snapshotRepoId(dir: string): string | undefined {
  const parts = path.resolve(dir).split(path.sep);
  const i = parts.lastIndexOf('snapshots');
  if (i < 1 || i !== parts.length - 2 || !parts[i - 1].startsWith('models--')) return undefined;
  return parts[i - 1].slice('models--'.length).split('--').join('/');
}
