/**
 * The CLI runs each job in a worker thread (the engine host, dist/engine-host.js, speaking the extension's
 * protocol over the thread's port), so that its main thread is never busy and answers SIGINT and SIGTERM
 * within a second whatever the job does:
 * - the first signal asks the job to stop (its signal aborts; it removes its partial output itself and
 *   answers `cancelled`);
 * - if it has not answered within STOP_GRACE_MS (it is stuck in synchronous work: a long loop, a
 *   pathological input), or at a second signal, the thread is terminated and the supervisor removes what
 *   this process left of the job's outputs (partial files and folders, its lock, folders it created on
 *   the way to them: see shared/leftovers.ts), then the CLI exits 130;
 * - a thread blocked inside a native call cannot be terminated (nor can the process exit normally while
 *   it is): after the same cleanup the process kills itself (exit status 137 instead of 130).
 * A worker costs one V8 isolate and the engine bundle's load at start-up; a supervising process would
 * cost a second Node start as well, and its job process would outlive a `kill -9` of the CLI.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Worker } from 'node:worker_threads';
import { JobRequest } from '../../shared/jobs/jobs';
import { removeLeftoversOf } from '../../shared/leftovers';
import { ErrorKind, FromEngine, isFromEngine, ProgressInfo } from '../../shared/protocol';
import { realish } from '../util/outputs';
import { OUTPUT_MARKER } from '../util/outputDir';

/** How long a job asked to stop may take before its thread is terminated. */
export const STOP_GRACE_MS = 500;
/** How long a terminated thread may take to end before the process kills itself. */
const TERMINATE_GRACE_MS = 300;

export type JobOutcome = { ok: true; report: unknown; text?: string } | { ok: false; kind: ErrorKind; message: string };

export interface JobEvents {
  progress(p: ProgressInfo): void;
  log(level: 'info' | 'warn', message: string): void;
}

/** The paths a request writes (`out`, `json`), as real paths, each with the folders above it that do not exist yet. */
function outputsOf(request: JobRequest): { target: string; missing: string[] }[] {
  const r = request as { out?: unknown; json?: unknown };
  return [r.out, r.json]
    .filter((p): p is string => typeof p === 'string' && p !== '' && p !== '-')
    .map((p) => {
      const target = realish(p);
      const missing: string[] = [];
      for (let d = path.dirname(target); !fs.existsSync(d) && path.dirname(d) !== d; d = path.dirname(d)) missing.push(d);
      return { target, missing };
    });
}

/** Removes what this process left of `outputs` after its job thread was stopped. */
function cleanUp(outputs: { target: string; missing: string[] }[]): void {
  for (const { target, missing } of outputs) {
    try {
      removeLeftoversOf(target, process.pid);
      // An earlier output being replaced: the marker's temporary file inside it.
      removeLeftoversOf(path.join(target, OUTPUT_MARKER), process.pid);
      for (const d of missing) fs.rmdirSync(d); // innermost first; one that is not empty stays, and so do those above
    } catch {
      // what cannot be removed stays for the next run of this output, which removes partials of dead processes
    }
  }
}

/** Runs `request` in a job thread, reporting its events; resolves to its outcome, `cancelled` when stopped. */
export function superviseJob(hostScript: string, request: JobRequest, events: JobEvents): Promise<JobOutcome> {
  const outputs = outputsOf(request);
  const worker = new Worker(hostScript, { stdout: false, stderr: false });
  return new Promise<JobOutcome>((resolve) => {
    let settled = false;
    let graceTimer: NodeJS.Timeout | undefined;
    const finish = (o: JobOutcome): void => {
      if (settled) return;
      settled = true;
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      clearTimeout(graceTimer);
      resolve(o);
    };
    let stopping = false;
    const stop = (): void => {
      if (settled || stopping) return;
      stopping = true;
      const cancelled = (): void => {
        cleanUp(outputs);
        finish({ ok: false, kind: 'cancelled', message: 'cancelled; nothing was written' });
      };
      // Cleaned once the thread has ended, so that nothing it was creating appears after the cleanup.
      const stuck = setTimeout(() => {
        cancelled();
        // After the CLI has printed its line (the awaiting code runs first).
        setImmediate(() => process.kill(process.pid, 'SIGKILL'));
      }, TERMINATE_GRACE_MS);
      worker.once('exit', () => {
        clearTimeout(stuck);
        cancelled();
      });
      void worker.terminate();
    };
    const onSignal = (): void => {
      if (graceTimer !== undefined) return stop();
      worker.postMessage({ type: 'cancel', inReplyTo: 1 });
      graceTimer = setTimeout(stop, STOP_GRACE_MS);
    };
    process.on('SIGINT', onSignal);
    process.on('SIGTERM', onSignal);
    worker.on('message', (m: unknown) => {
      if (!isFromEngine(m)) return;
      const msg = m as FromEngine;
      switch (msg.type) {
        case 'ready':
          // A signal before the thread was ready: the job never starts, and the grace timer ends it.
          if (graceTimer === undefined) worker.postMessage({ type: 'run', messageId: 1, request });
          return;
        case 'progress':
          events.progress(msg.progress);
          return;
        case 'log':
          events.log(msg.level, msg.message);
          return;
        case 'result':
          finish({ ok: true, report: msg.report, text: msg.text });
          return;
        case 'error':
          finish({ ok: false, kind: msg.kind, message: msg.message });
      }
    });
    worker.on('error', (e) => {
      cleanUp(outputs);
      finish({ ok: false, kind: 'internal', message: e.stack ?? String(e) });
    });
    worker.on('exit', (code) => {
      if (settled || stopping) return;
      cleanUp(outputs);
      finish({ ok: false, kind: 'internal', message: `the job's thread ended (exit code ${code}) without an answer` });
    });
  }).finally(() => {
    // The job has answered: its thread has nothing left to do (a stopped one is being terminated).
    void worker.terminate();
  });
}
