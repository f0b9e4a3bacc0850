/**
 * The engine process the extension forks (dist/engine-host.js): it runs the same commands as the
 * `lora-lens` CLI, one at a time, with progress, warnings and the report going back over Node IPC
 * (src/shared/protocol.ts) and a cancel message aborting the job's signal.
 */
import { version } from '../../package.json';
import { ErrorKind, FromEngine, isToEngine, ProgressInfo, RunRequest } from '../shared/protocol';
import { parseArgs } from './cli/args';
import { CliContext } from './cli/command';
import { COMMANDS } from './cli/commands';
import { COMMON_FLAGS } from './cli/main';
import { CancelledError, LensError } from './errors';
import { Kernels } from './kernels/kernels';
import { DeviceChoice, selectKernels } from './kernels/select';
import { asInputError } from '../shared/files';
import { writeReportFile } from './util/outputs';

/** Progress messages per job per second at most; the last one of a phase always goes. */
const PROGRESS_INTERVAL_MS = 100;

const send = (m: FromEngine): void => {
  process.send?.(m);
};

const jobs = new Map<number, AbortController>();
let queue: Promise<void> = Promise.resolve();

function throttled(id: number): (p: ProgressInfo) => void {
  let last = 0;
  return (p) => {
    const now = Date.now();
    if (now - last < PROGRESS_INTERVAL_MS && p.done < p.total) return;
    last = now;
    const progress: ProgressInfo = { phase: p.phase, done: p.done, total: p.total };
    if (p.bytes !== undefined) progress.bytes = p.bytes;
    if (p.tensor !== undefined) progress.tensor = p.tensor;
    send({ type: 'progress', inReplyTo: id, progress });
  };
}

async function run(req: RunRequest, abort: AbortController): Promise<void> {
  const id = req.messageId;
  const fail = (kind: ErrorKind, message: string): void => send({ type: 'error', inReplyTo: id, kind, message });
  const cmd = COMMANDS.find((c) => c.name === req.command);
  if (!cmd) return fail('input', `unknown command '${req.command}'`);
  let kernels: Kernels | undefined;
  try {
    if (abort.signal.aborted) throw new CancelledError();
    const args = parseArgs(cmd.name, req.args, { ...cmd.flags, ...COMMON_FLAGS }, cmd.maxPositional);
    const ctx: CliContext = {
      signal: abort.signal,
      progress: throttled(id),
      warn: (message) => send({ type: 'log', inReplyTo: id, level: 'warn', message }),
      log: (message) => send({ type: 'log', inReplyTo: id, level: 'info', message }),
      kernels: async () => (kernels ??= await selectKernels(args.flags.device as DeviceChoice, ctx)),
    };
    const result = await cmd.run(args, ctx);
    const jsonOut = args.flags.json;
    if (typeof jsonOut === 'string' && jsonOut !== '-' && result.report !== undefined) {
      writeReportFile(jsonOut, JSON.stringify(result.report, null, 2) + '\n');
    }
    send({ type: 'result', inReplyTo: id, report: result.report ?? null, text: result.text });
  } catch (caught) {
    const e = asInputError(caught);
    if (e instanceof LensError) fail('input', e.message);
    else if (e instanceof CancelledError) fail('cancelled', 'cancelled; nothing was written');
    else fail('internal', (e as Error).stack ?? String(e));
  } finally {
    await kernels?.dispose();
  }
}

process.on('message', (m: unknown) => {
  if (!isToEngine(m)) return;
  if (m.type === 'cancel') {
    jobs.get(m.inReplyTo)?.abort();
    return;
  }
  const abort = new AbortController();
  jobs.set(m.messageId, abort);
  queue = queue.then(() => run(m, abort)).finally(() => jobs.delete(m.messageId));
});

// The extension went away: stop the running job (it removes its partial output), then leave.
process.on('disconnect', () => {
  for (const a of jobs.values()) a.abort();
  void queue.finally(() => process.exit(0));
});

send({ type: 'ready', pid: process.pid, version });
