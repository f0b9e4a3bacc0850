import { version } from '../../../package.json';
import { CancelledError, LensError } from '../errors';
import { Kernels } from '../kernels/kernels';
import { DEVICE_CHOICES, DeviceChoice, selectKernels } from '../kernels/select';
import { Progress } from '../util/job';
import { asInputError } from '../../shared/files';
import { writeReportFile } from '../util/outputs';
import { parseArgs } from './args';
import { CliCommand, CliContext } from './command';
import { COMMANDS } from './commands';

/** Flags every command takes, on the CLI and in the engine process. */
export const COMMON_FLAGS = {
  json: { kind: 'string' },
  device: { kind: 'string', choices: DEVICE_CHOICES, default: 'auto' },
  quiet: { kind: 'bool' },
} as const;

function help(): string {
  const width = Math.max(...COMMANDS.map((c) => c.name.length));
  return [
    'lora-lens: inspect, merge, validate and decompose LoRA adapters and checkpoints',
    '',
    'usage: lora-lens <command> [options]',
    '',
    ...COMMANDS.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Every command takes --json FILE (write the report), --device auto|cpu|gpu, --quiet.',
    "Run 'lora-lens <command> --help' for a command's options.",
    "'lora-lens demo [--out DIR]' writes a small StarCoder2-shaped model and adapters (default .demo/) and runs the jobs on them.",
  ].join('\n');
}

function progressPrinter(): (p: Progress) => void {
  if (!process.stderr.isTTY) return () => {};
  let last = 0;
  return (p) => {
    const now = Date.now();
    if (now - last < 100 && p.done < p.total) return;
    last = now;
    const pct = p.total > 0 ? Math.floor((100 * p.done) / p.total) : 0;
    const line = `${p.phase} ${p.done}/${p.total} (${pct}%)${p.tensor ? ' ' + p.tensor : ''}`;
    process.stderr.write(`\r\x1b[2K${line.slice(0, (process.stderr.columns ?? 100) - 1)}`);
    if (p.done >= p.total) process.stderr.write('\r\x1b[2K');
  };
}

/** Runs the CLI; resolves to the exit code (0 ok, 2 bad input, 130 cancelled, 1 internal error). */
export async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    process.stdout.write(help() + '\n');
    return name === undefined ? 2 : 0;
  }
  if (name === '--version') {
    process.stdout.write(`${version}\n`);
    return 0;
  }
  const cmd: CliCommand | undefined = COMMANDS.find((c) => c.name === name);
  if (!cmd) {
    process.stderr.write(`lora-lens: unknown command '${name}' (commands: ${COMMANDS.map((c) => c.name).join(', ')}; lora-lens --help tells more)\n`);
    return 2;
  }
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`usage: lora-lens ${cmd.usage}\n\n${cmd.summary}\n`);
    return 0;
  }

  const abort = new AbortController();
  const onSigint = (): void => {
    if (abort.signal.aborted) process.exit(130);
    abort.abort();
  };
  process.on('SIGINT', onSigint);
  process.on('SIGTERM', onSigint);
  let kernels: Kernels | undefined;
  // On a terminal warnings show as they come; otherwise they are held until the command succeeds, so
  // that bad input is exactly one line on stderr (a warning before the error would be a second).
  const live = process.stderr.isTTY === true;
  const held: string[] = [];
  const flushWarnings = (): void => {
    for (const w of held.splice(0)) process.stderr.write(w);
  };
  try {
    const args = parseArgs(name, rest, { ...cmd.flags, ...COMMON_FLAGS }, cmd.maxPositional);
    const quiet = args.flags.quiet === true;
    const ctx: CliContext = {
      signal: abort.signal,
      progress: quiet ? () => {} : progressPrinter(),
      warn: (m) => {
        const line = `warning: ${m}\n`;
        if (live) process.stderr.write(line);
        else held.push(line);
      },
      log: (m) => {
        if (!quiet && process.stderr.isTTY) process.stderr.write(`${m}\n`);
      },
      kernels: async () => (kernels ??= await selectKernels(args.flags.device as DeviceChoice, ctx)),
    };
    const result = await cmd.run(args, ctx);
    flushWarnings();
    const jsonOut = args.flags.json as string | undefined;
    if (jsonOut !== undefined && result.report !== undefined) {
      const text = JSON.stringify(result.report, null, 2) + '\n';
      if (jsonOut === '-') process.stdout.write(text);
      else writeReportFile(jsonOut, text);
    }
    if (result.text && !quiet && jsonOut !== '-') process.stdout.write(result.text.endsWith('\n') ? result.text : result.text + '\n');
    return 0;
  } catch (caught) {
    const e = asInputError(caught);
    if (e instanceof LensError) {
      // Usage errors already name the command (`lora-lens merge: --out is required`).
      const msg = e.message.replace(/\s*\n\s*/g, ' ');
      process.stderr.write(msg.startsWith(`lora-lens ${name}: `) ? `${msg}\n` : `lora-lens ${name}: ${msg}\n`);
      return 2;
    }
    flushWarnings();
    if (e instanceof CancelledError) {
      process.stderr.write(`lora-lens ${name}: cancelled; nothing was written\n`);
      return 130;
    }
    process.stderr.write(`lora-lens ${name}: internal error: ${(e as Error).stack ?? e}\n`);
    return 1;
  } finally {
    process.off('SIGINT', onSigint);
    process.off('SIGTERM', onSigint);
    await kernels?.dispose();
  }
}
