/**
 * The engine host (dist/engine-host.js): runs the jobs of typed requests (src/shared/jobs), one at a time,
 * with progress, warnings and the report going back as messages (src/shared/protocol.ts) and a cancel
 * message aborting the job's signal. Two transports carry them:
 * - Node IPC, when the extension forks it as a process;
 * - a worker thread's port, when the `lora-lens` CLI runs its job here, so that its main thread stays
 *   free to answer SIGINT and stop a job stuck in synchronous work (src/engine/cli/supervisor.ts).
 */
import { parentPort } from 'node:worker_threads';
import { version } from '../../package.json';
import { ErrorKind, FromEngine, isToEngine, ProgressInfo, RunRequest } from '../shared/protocol';
import { CancelledError, LensError } from './errors';
import { runJob } from './run';
import { asInputError } from '../shared/files';
import { writeReportFile } from './util/outputs';

/** Progress messages per job per second at most; the last one of a phase always goes. */
const PROGRESS_INTERVAL_MS = 100;

const port = parentPort;
const send = (m: FromEngine): void => {
  if (port) port.postMessage(m);
  else process.send?.(m);
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
  try {
    if (abort.signal.aborted) throw new CancelledError();
    const result = await runJob(req.request, {
      signal: abort.signal,
      progress: throttled(id),
      warn: (message) => send({ type: 'log', inReplyTo: id, level: 'warn', message }),
      log: (message) => send({ type: 'log', inReplyTo: id, level: 'info', message }),
    });
    const jsonOut = (req.request as { json?: unknown }).json;
    if (typeof jsonOut === 'string' && jsonOut !== '-') writeReportFile(jsonOut, JSON.stringify(result.report, null, 2) + '\n');
    send({ type: 'result', inReplyTo: id, report: result.report, text: result.text });
  } catch (caught) {
    const e = asInputError(caught);
    if (e instanceof LensError) fail('input', e.message);
    else if (e instanceof CancelledError) fail('cancelled', 'cancelled; nothing was written');
    else fail('internal', (e as Error).stack ?? String(e));
  }
}

function receive(m: unknown): void {
  if (!isToEngine(m)) return;
  if (m.type === 'cancel') {
    jobs.get(m.inReplyTo)?.abort();
    return;
  }
  const abort = new AbortController();
  jobs.set(m.messageId, abort);
  queue = queue.then(() => run(m, abort)).finally(() => jobs.delete(m.messageId));
}

if (port) {
  port.on('message', receive);
} else {
  process.on('message', receive);
  // The extension went away: stop the running job (it removes its partial output), then leave.
  process.on('disconnect', () => {
    for (const a of jobs.values()) a.abort();
    void queue.finally(() => process.exit(0));
  });
}

send({ type: 'ready', pid: process.pid, version });
