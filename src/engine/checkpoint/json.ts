import { readRegularFile } from '../../shared/files';
import { LensError } from '../errors';

/** A JSON object file (config.json, adapter_config.json, an index), or a LensError naming the file. */
export function readJson(file: string): Record<string, unknown> {
  const text = readRegularFile(file).toString('utf8');
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new LensError(file, `invalid JSON (${(e as Error).message})`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new LensError(file, 'not a JSON object');
  return v as Record<string, unknown>;
}
