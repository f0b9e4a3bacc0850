/** The built `lora-lens` CLI (`npm run build` first) run as a user runs it, and the shape of its bad-input answer. */
import * as assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

export const CLI = path.resolve(__dirname, '../../../../dist/cli.js');

export interface CliRun {
  status: number | null;
  stdout: string;
  stderr: string;
}

export function runCli(args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): CliRun {
  const r = spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', ...opts });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** Exit code 2, nothing on stdout, exactly one line on stderr naming each of `names`, no stack trace. */
export function assertOneLineError(r: CliRun, ...names: string[]): void {
  assert.equal(r.status, 2, r.stderr);
  assert.equal(r.stdout, '');
  const lines = r.stderr.split('\n').filter((l) => l !== '');
  assert.equal(lines.length, 1, r.stderr);
  for (const n of names) assert.ok(lines[0].includes(n), `${lines[0]} should name ${n}`);
  assert.doesNotMatch(r.stderr, /internal error|\bat \w+ \(|\n\s+at /);
}
