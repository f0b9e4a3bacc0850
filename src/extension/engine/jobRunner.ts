import * as vscode from 'vscode';
import { DeviceChoice } from '../../shared/jobs/choices';
import { JobName, JobRequest } from '../../shared/jobs/jobs';
import { EngineProcess, JobError, JobResult } from './engineProcess';

export interface JobSpec {
  /** Shown in the notification ("Merging adapter…"). */
  title: string;
  request: JobRequest;
  /** Output paths, cleaned of partial files if the engine dies. */
  outputs?: string[];
  /** Progress in the status bar only, no notification (a census restored at start-up). */
  quiet?: boolean;
}

/**
 * Runs engine jobs one at a time (a queue), each under a progress notification whose Cancel stops it,
 * with the running job in the status bar (click: the log). The engine's warnings go to the log (the
 * reports carry them too): a toast is for what needs the user's action.
 * Resolves to the result, or to undefined when the job failed or was cancelled (the user was told).
 */
export class JobRunner implements vscode.Disposable {
  private readonly engine: EngineProcess;
  private queue: Promise<unknown> = Promise.resolve();
  /** Jobs queued or running. */
  private busy = 0;
  private readonly status = vscode.window.createStatusBarItem('loraLens.job', vscode.StatusBarAlignment.Left, 10);

  constructor(
    hostScript: string,
    private readonly output: vscode.LogOutputChannel,
  ) {
    this.engine = new EngineProcess(hostScript, (line) => output.info(line));
    this.status.name = 'LoRA Lens job';
    this.status.command = 'loraLens.showLog';
  }

  /** The device setting, passed to every job as its `device`. */
  private device(): DeviceChoice {
    return vscode.workspace.getConfiguration('loraLens').get<DeviceChoice>('device', 'auto');
  }

  run(spec: JobSpec): Promise<JobResult | undefined> {
    // Jobs run one after the other; a job that has to wait says so in the status bar meanwhile.
    if (this.busy > 0) vscode.window.setStatusBarMessage(`$(clock) LoRA Lens: ${spec.title} waits for the running job`, this.queue);
    this.busy++;
    const next = this.queue.then(() => this.runNow(spec)).finally(() => this.busy--);
    this.queue = next.catch(() => undefined);
    return next;
  }

  private runNow(spec: JobSpec): Promise<JobResult | undefined> {
    this.output.info(`${spec.request.job}: ${spec.title}`);
    this.status.text = `$(sync~spin) LoRA Lens: ${spec.title}`;
    this.status.tooltip = `${spec.title} (click for the LoRA Lens log)`;
    this.status.show();
    const warned = new Set<string>();
    return Promise.resolve(
      vscode.window.withProgress(
        { location: spec.quiet ? vscode.ProgressLocation.Window : vscode.ProgressLocation.Notification, title: `LoRA Lens: ${spec.title}`, cancellable: !spec.quiet },
        async (progress, token) => {
          const report = reporter(progress);
          const job = this.engine.run({ ...spec.request, device: this.device() }, {
            outputs: spec.outputs,
            onProgress: (p) => {
              report(p);
              this.status.text = `$(sync~spin) LoRA Lens: ${spec.title} — ${p.phase} ${p.done}/${p.total}`;
            },
            onLog: (level, message) => {
              if (level !== 'warn') return;
              // Expected conditions (a GPT-2 Conv1D's fan_in_fan_out) go to the log once per job, not to a toast.
              if (warned.has(message)) return;
              warned.add(message);
              this.output.warn(`${spec.request.job}: ${message}`);
            },
          });
          const sub = token.onCancellationRequested(() => {
            progress.report({ message: 'cancelling…' });
            job.cancel();
          });
          try {
            return await job.done;
          } catch (e) {
            this.tell(spec.title, spec.request.job, e);
            return undefined;
          } finally {
            sub.dispose();
            if (this.busy <= 1) this.status.hide();
          }
        },
      ),
    );
  }

  private tell(title: string, job: JobName, e: unknown): void {
    this.output.error(`${job}: ${(e as Error).message}`);
    if (!(e instanceof JobError)) {
      void vscode.window.showErrorMessage(`LoRA Lens ${job} failed: ${(e as Error).message}`);
      return;
    }
    switch (e.kind) {
      case 'cancelled':
        void vscode.window.showInformationMessage(`LoRA Lens: ${title} cancelled; nothing was written.`);
        return;
      case 'input':
        void vscode.window.showErrorMessage(`LoRA Lens ${job}: ${e.message}`);
        return;
      case 'crashed':
        void vscode.window.showErrorMessage(
          `LoRA Lens: ${e.message} while running ${job}. Nothing it was writing was kept; the engine restarts with the next job.`,
          'Show Log',
        ).then((a) => a && this.output.show());
        return;
      case 'internal':
        void vscode.window.showErrorMessage(`LoRA Lens ${job}: internal error (${e.message.split('\n')[0]}). See the LoRA Lens output.`, 'Show Log').then(
          (a) => a && this.output.show(),
        );
        return;
    }
  }

  dispose(): void {
    this.status.dispose();
    this.engine.dispose();
  }
}

/** Progress messages as percentage increments, which is what the notification takes. */
function reporter(
  progress: vscode.Progress<{ message?: string; increment?: number }>,
): (p: { phase: string; done: number; total: number; tensor?: string }) => void {
  let shown = 0;
  let phase = '';
  return (p) => {
    if (p.phase !== phase) {
      phase = p.phase;
      shown = 0;
    }
    const pct = p.total > 0 ? (100 * p.done) / p.total : 0;
    const increment = pct >= shown ? pct - shown : undefined;
    if (increment !== undefined) shown = pct;
    progress.report({ message: `${p.phase} ${p.done}/${p.total}${p.tensor ? ` — ${p.tensor}` : ''}`, increment });
  };
}
