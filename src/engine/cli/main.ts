import * as path from 'node:path';
import { version } from '../../../package.json';
import { isJobName, JOB_NAMES, JobRequest, JOBS } from '../../shared/jobs/jobs';
import { flagSpecs } from '../../shared/jobs/options';
import { ParsedArgs, requestFromArgs } from '../../shared/jobs/request';
import { LensError } from '../errors';
import { escapeControl } from '../../shared/errors';
import { ProgressInfo } from '../../shared/protocol';
import { parseArgs } from './args';
import { superviseJob } from './supervisor';

/** The engine host beside this bundle (dist/engine-host.js): the job runs there, in a worker thread. */
const ENGINE_HOST = path.join(__dirname, 'engine-host.js');

function help(): string {
  const width = Math.max(...JOB_NAMES.map((n) => n.length));
  return [
    'lora-lens: inspect, merge, validate and decompose LoRA adapters and checkpoints',
    '',
    'usage: lora-lens <command> [options]',
    '',
    ...JOB_NAMES.map((n) => `  ${n.padEnd(width)}  ${JOBS[n].summary}`),
    '',
    'Every command takes --json FILE (write the report), --device auto|cpu|gpu, --quiet.',
    "Run 'lora-lens <command> --help' for a command's options.",
    "'lora-lens demo [--out DIR]' writes a small StarCoder2-shaped model and adapters (default .demo/) and runs the jobs on them.",
  ].join('\n');
}

function progressPrinter(): (p: ProgressInfo) => void {
  if (!process.stderr.isTTY) return () => {};
  let last = 0;
  return (p) => {
    const now = Date.now();
    if (now - last < 100 && p.done < p.total) return;
    last = now;
    const pct = p.total > 0 ? Math.floor((100 * p.done) / p.total) : 0;
    const line = escapeControl(`${p.phase} ${p.done}/${p.total} (${pct}%)${p.tensor ? ' ' + p.tensor : ''}`, false);
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
  if (!isJobName(name)) {
    process.stderr.write(`lora-lens: unknown command '${escapeControl(name, false)}' (commands: ${JOB_NAMES.join(', ')}; lora-lens --help tells more)\n`);
    return 2;
  }
  const job = JOBS[name];
  if (rest.includes('--help') || rest.includes('-h')) {
    process.stdout.write(`usage: lora-lens ${job.usage}\n\n${job.summary}\n`);
    return 0;
  }

  // On a terminal warnings show as they come; otherwise they are held until the command succeeds, so
  // that bad input is exactly one line on stderr (a warning before the error would be a second).
  const live = process.stderr.isTTY === true;
  const held: string[] = [];
  const flushWarnings = (): void => {
    for (const w of held.splice(0)) process.stderr.write(w);
  };
  let args: ParsedArgs;
  let request: JobRequest;
  try {
    args = parseArgs(name, rest, flagSpecs(job), 'positional' in job ? 1 : 0);
    request = requestFromArgs(name, args);
  } catch (e) {
    if (!(e instanceof LensError)) throw e;
    return badInput(name, e.message);
  }
  const quiet = args.flags.quiet === true;
  const progress = quiet ? () => {} : progressPrinter();
  const outcome = await superviseJob(ENGINE_HOST, request, {
    progress,
    log: (level, m) => {
      if (level === 'warn') {
        const line = `warning: ${escapeControl(m, false)}\n`;
        if (live) process.stderr.write(line);
        else held.push(line);
      } else if (!quiet && process.stderr.isTTY) process.stderr.write(`${escapeControl(m)}\n`);
    },
  });
  if (outcome.ok) {
    flushWarnings();
    const jsonOut = args.flags.json as string | undefined;
    if (jsonOut === '-') process.stdout.write(JSON.stringify(outcome.report, null, 2) + '\n');
    const text = outcome.text;
    if (text && !quiet && jsonOut !== '-') process.stdout.write(escapeControl(text.endsWith('\n') ? text : text + '\n'));
    return 0;
  }
  if (outcome.kind === 'input') return badInput(name, outcome.message);
  flushWarnings();
  if (outcome.kind === 'cancelled') {
    process.stderr.write(`lora-lens ${name}: cancelled; nothing was written\n`);
    return 130;
  }
  process.stderr.write(`lora-lens ${name}: internal error: ${outcome.message}\n`);
  return 1;
}

/** Bad input: exit 2 and one line. Usage errors already name the command (`lora-lens merge: --out is required`). */
function badInput(name: string, message: string): number {
  const msg = escapeControl(message.replace(/\s*\n\s*/g, ' '), false);
  process.stderr.write(msg.startsWith(`lora-lens ${name}: `) ? `${msg}\n` : `lora-lens ${name}: ${msg}\n`);
  return 2;
}
