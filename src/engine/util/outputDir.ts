import * as fs from 'node:fs';
import * as path from 'node:path';
import { LensError } from '../errors';
import { tempPathFor } from '../safetensors/writer';
import { assertNotOverInputs } from './outputs';

/**
 * An output folder built in a temporary sibling and moved into place only when the job succeeds, so a
 * failed or cancelled job leaves nothing behind. An existing folder at the target is replaced on commit.
 */
export class OutputDir {
  readonly tmp: string;
  private done = false;
  /** Folders made to hold the target (its missing ancestors), removed again when the job fails. */
  private readonly madeParents: string[] = [];

  constructor(
    readonly target: string,
    inputs: string[],
  ) {
    assertNotOverInputs(target, 'the output', inputs);
    const parent = path.dirname(path.resolve(target));
    for (let p = parent; !fs.existsSync(p); p = path.dirname(p)) this.madeParents.push(p);
    if (this.madeParents.length > 0) fs.mkdirSync(parent, { recursive: true });
    if (fs.existsSync(target) && !fs.statSync(target).isDirectory()) throw new LensError(target, 'output exists and is not a folder');
    this.tmp = tempPathFor(path.resolve(target));
    fs.mkdirSync(this.tmp);
  }

  file(name: string): string {
    return path.join(this.tmp, name);
  }

  commit(): void {
    if (this.done) return;
    const target = path.resolve(this.target);
    if (fs.existsSync(target)) {
      const old = tempPathFor(target);
      fs.renameSync(target, old);
      fs.renameSync(this.tmp, target);
      fs.rmSync(old, { recursive: true, force: true });
    } else {
      fs.renameSync(this.tmp, target);
    }
    this.done = true;
  }

  abort(): void {
    if (this.done) return;
    fs.rmSync(this.tmp, { recursive: true, force: true });
    // Innermost first; a folder something else has written into meanwhile stays.
    for (const p of this.madeParents) {
      try {
        fs.rmdirSync(p);
      } catch {
        break;
      }
    }
    this.done = true;
  }
}

/** Runs `work` in an OutputDir, committing on success and removing everything on failure. */
export async function withOutputDir<T>(target: string, inputs: string[], work: (out: OutputDir) => Promise<T>): Promise<T> {
  const out = new OutputDir(target, inputs);
  try {
    const result = await work(out);
    out.commit();
    return result;
  } catch (e) {
    out.abort();
    throw e;
  }
}
