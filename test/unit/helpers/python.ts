import { spawnSync } from 'node:child_process';

/**
 * A Python interpreter that imports every module in `modules` (e.g. numpy, torch), or the reason there is
 * none. Debian's python3-numpy / python3-torch install for /usr/bin/python3, which need not be the first
 * `python3` on PATH (pyenv), so both are tried. CI installs the packages (.ci/run) and sets
 * LORA_LENS_REQUIRE_PYTHON=1, which turns a missing interpreter into a failure instead of a skip.
 */
export function findPython(modules: string[]): { python?: string; skip?: string } {
  const tried: string[] = [];
  for (const python of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(python, ['-c', modules.map((m) => `import ${m}`).join('; ') || 'pass'], { encoding: 'utf8' });
    if (r.status === 0) return { python };
    tried.push(`${python}: ${r.error ? (r.error as NodeJS.ErrnoException).code : (r.stderr.trim().split('\n').pop() ?? '')}`);
  }
  const why = `no python3 with ${modules.join(', ')} (${tried.join('; ')})`;
  if (process.env.LORA_LENS_REQUIRE_PYTHON === '1') throw new Error(why);
  return { skip: why };
}
