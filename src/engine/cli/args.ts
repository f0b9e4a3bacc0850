import { LensError } from '../errors';
import { assertSafeOutputs } from '../util/outputs';

export type FlagKind = 'string' | 'number' | 'bool' | 'list' | 'repeat';

export interface FlagSpec {
  kind: FlagKind;
  /** Values the flag accepts (string flags). */
  choices?: readonly string[];
  default?: string | number | boolean;
}

export interface ParsedArgs {
  positional: string[];
  flags: Record<string, string | number | boolean | string[] | undefined>;
  /** Every flag value in command-line order (`--adapter a --finetuned b --adapter c`), which `flags` loses across flags. */
  ordered?: Array<{ name: string; value: string }>;
}

/**
 * Parses `args` against the command's flags: `--x V` (string, number), `--x` (bool), `--x V1 V2 …`
 * (list: values up to the next flag), `--x V` given several times (repeat). `--x=V` works too.
 * Refuses an `--out` or `--json FILE` that would be written over one of the command's inputs.
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
  // Before any work: --out and --json FILE must not land on an input (the CLI and the engine host both parse here).
  assertSafeOutputs(positional, flags, spec);
  return { positional, flags, ordered };
}

/** Reads a required flag or fails with a usage error naming it. */
export function required<T>(command: string, flags: ParsedArgs['flags'], name: string): T {
  const v = flags[name];
  if (v === undefined) throw new LensError(`lora-lens ${command}`, `--${name} is required`);
  return v as T;
}

/** `--dtypes fp16,bf16` and `--dtypes fp16 bf16` alike. */
export function splitList(values: string[]): string[] {
  return values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
}
