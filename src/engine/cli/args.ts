import { FlagSpec } from '../../shared/jobs/options';
import { ParsedArgs } from '../../shared/jobs/request';
import { LensError } from '../errors';

/**
 * Parses `args` against the command's flags: `--x V` (string, number), `--x` (bool), `--x V1 V2 …`
 * (list: values up to the next flag), `--x V` given several times (repeat). `--x=V` works too.
 */
export function parseArgs(command: string, args: string[], spec: Record<string, FlagSpec>, maxPositional: number): ParsedArgs {
  const flags: ParsedArgs['flags'] = {};
  const positional: string[] = [];
  const ordered: NonNullable<ParsedArgs['ordered']> = [];
  const usage = (msg: string): never => {
    throw new LensError(`lora-lens ${command}`, msg);
  };
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (!a.startsWith('--') || a === '--') {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    const s = spec[name];
    if (!s) usage(`unknown option --${name} (options: ${Object.keys(spec).map((k) => '--' + k).join(', ')})`);
    const inline = eq < 0 ? undefined : a.slice(eq + 1);
    const takeOne = (): string => {
      if (inline !== undefined) return inline;
      const v = args[i + 1];
      if (v === undefined || (v.startsWith('--') && v.length > 2)) usage(`--${name} needs a value`);
      i++;
      return v;
    };
    const takeRecorded = (): string => {
      const v = takeOne();
      ordered.push({ name, value: v });
      return v;
    };
    switch (s.kind) {
      case 'bool':
        flags[name] = inline === undefined ? true : inline !== 'false';
        break;
      case 'string': {
        const v = takeRecorded();
        if (s.choices && !s.choices.includes(v)) usage(`--${name} must be one of ${s.choices.join(', ')} (got ${JSON.stringify(v)})`);
        flags[name] = v;
        break;
      }
      case 'number': {
        const v = takeRecorded();
        const n = Number(v);
        if (v.trim() === '' || !Number.isFinite(n)) usage(`--${name} must be a number (got ${JSON.stringify(v)})`);
        flags[name] = n;
        break;
      }
      case 'repeat':
        flags[name] = [...((flags[name] as string[] | undefined) ?? []), takeRecorded()];
        break;
      case 'list': {
        const vals: string[] = inline !== undefined ? inline.split(',').filter((x) => x !== '') : [];
        while (inline === undefined && i + 1 < args.length && !args[i + 1].startsWith('--')) vals.push(args[++i]);
        if (vals.length === 0) usage(`--${name} needs at least one value`);
        for (const value of vals) ordered.push({ name, value });
        flags[name] = [...((flags[name] as string[] | undefined) ?? []), ...vals];
        break;
      }
    }
  }
  for (const [name, s] of Object.entries(spec)) if (flags[name] === undefined && s.default !== undefined) flags[name] = s.default;
  if (positional.length > maxPositional) usage(`unexpected argument ${JSON.stringify(positional[maxPositional])}`);
  return { positional, flags, ordered };
}
