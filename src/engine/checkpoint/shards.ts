import * as fs from 'node:fs';
import * as path from 'node:path';
import { LensError } from '../errors';
import { readJson } from './json';

/** The shard files of an index, each checked to stay inside the folder (no `..`, absolute paths or symlinks out). */
export function shardFiles(dir: string, indexPath: string): { files: string[]; weightMap: Map<string, string> } {
  const index = readJson(indexPath);
  const wm = index.weight_map;
  if (wm === null || typeof wm !== 'object' || Array.isArray(wm)) throw new LensError(indexPath, 'weight_map is missing or not an object');
  if (Object.keys(wm).length === 0) throw new LensError(indexPath, 'weight_map lists no tensors');
  const realDir = fs.realpathSync(dir);
  const resolved = new Map<string, string>();
  const weightMap = new Map<string, string>();
  for (const [name, shard] of Object.entries(wm as Record<string, unknown>)) {
    if (typeof shard !== 'string' || shard === '') throw new LensError(indexPath, `weight_map entry is not a file name`, name);
    let file = resolved.get(shard);
    if (file === undefined) {
      if (path.isAbsolute(shard) || shard.split(/[\\/]/).includes('..')) {
        throw new LensError(indexPath, `weight_map points outside the folder: ${JSON.stringify(shard)}`, name);
      }
      file = path.join(dir, shard);
      let real: string;
      try {
        real = fs.realpathSync(file);
      } catch {
        throw new LensError(indexPath, `shard ${shard} does not exist`, name);
      }
      if (!real.startsWith(realDir + path.sep)) throw new LensError(indexPath, `shard ${shard} resolves outside the folder (symlink)`, name);
      resolved.set(shard, file);
    }
    weightMap.set(name, file);
  }
  return { files: [...new Set(resolved.values())].sort(), weightMap };
}
