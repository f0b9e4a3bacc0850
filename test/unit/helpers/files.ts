/** What is on disk, to show that a job changed nothing. */
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';

/** Every file under `dir` with its sha256 (symlinks and other non-files by their kind). */
export function snapshot(dir: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of fs.readdirSync(dir, { withFileTypes: true, recursive: true })) {
    const p = path.join(e.parentPath, e.name);
    const rel = path.relative(dir, p);
    if (e.isFile()) out[rel] = crypto.createHash('sha256').update(fs.readFileSync(p)).digest('hex');
    else if (!e.isDirectory()) out[rel] = e.isSymbolicLink() ? `symlink -> ${fs.readlinkSync(p)}` : 'special';
  }
  return out;
}
