import * as fs from 'node:fs';
import { LensError } from '../errors';

/** A JSON object file (config.json, adapter_config.json, an index), or a LensError naming the file. */
export function readJson(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new LensError(file, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (e) {
    throw new LensError(file, `invalid JSON (${(e as Error).message})`);
  }
  if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new LensError(file, 'not a JSON object');
  return v as Record<string, unknown>;
}
