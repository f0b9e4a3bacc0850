/**
 * The messages between the extension and the engine process (Node IPC, structured clone of JSON).
 * A request carries a `messageId`; everything the engine sends about it carries that id as `inReplyTo`,
 * so the extension resolves each job's promise from the answers. Used on both sides; no `vscode` import.
 */
import { JobRequest } from './jobs/jobs';

export interface ProgressInfo {
  phase: string;
  done: number;
  total: number;
  bytes?: number;
  tensor?: string;
}

/** Run one job (the engine checks the request in full and answers bad ones with an `input` error). */
export interface RunRequest {
  type: 'run';
  messageId: number;
  request: JobRequest;
}

/** Abort the job `inReplyTo`; it answers with an error of kind `cancelled` once it has cleaned up. */
export interface CancelRequest {
  type: 'cancel';
  inReplyTo: number;
}

export type ToEngine = RunRequest | CancelRequest;

/** Sent once when the engine is listening. */
export interface ReadyMessage {
  type: 'ready';
  pid: number;
  version: string;
}

export interface ProgressMessage {
  type: 'progress';
  inReplyTo: number;
  progress: ProgressInfo;
}

export interface LogMessage {
  type: 'log';
  inReplyTo: number;
  level: 'info' | 'warn';
  message: string;
}

export interface ResultMessage {
  type: 'result';
  inReplyTo: number;
  /** The job's report (its `--json` content): a `JobReport` of the job asked for. */
  report: unknown;
  /** The readable report the CLI prints. */
  text?: string;
}

/** `input`: bad input (the CLI's exit 2); `cancelled`: stopped on request (130); `internal`: a bug (1). */
export type ErrorKind = 'input' | 'cancelled' | 'internal';

export interface ErrorMessage {
  type: 'error';
  inReplyTo: number;
  kind: ErrorKind;
  message: string;
}

export type FromEngine = ReadyMessage | ProgressMessage | LogMessage | ResultMessage | ErrorMessage;

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const isId = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

function isProgress(v: unknown): v is ProgressInfo {
  return (
    isObject(v) &&
    typeof v.phase === 'string' &&
    typeof v.done === 'number' &&
    typeof v.total === 'number' &&
    (v.bytes === undefined || typeof v.bytes === 'number') &&
    (v.tensor === undefined || typeof v.tensor === 'string')
  );
}

/** Validates a message received by the engine; anything else is ignored there. */
export function isToEngine(v: unknown): v is ToEngine {
  if (!isObject(v)) return false;
  switch (v.type) {
    case 'run':
      return isId(v.messageId) && isObject(v.request) && typeof v.request.job === 'string';
    case 'cancel':
      return isId(v.inReplyTo);
    default:
      return false;
  }
}

/** Validates a message received by the extension. */
export function isFromEngine(v: unknown): v is FromEngine {
  if (!isObject(v)) return false;
  switch (v.type) {
    case 'ready':
      return isId(v.pid) && typeof v.version === 'string';
    case 'progress':
      return isId(v.inReplyTo) && isProgress(v.progress);
    case 'log':
      return isId(v.inReplyTo) && (v.level === 'info' || v.level === 'warn') && typeof v.message === 'string';
    case 'result':
      return isId(v.inReplyTo) && 'report' in v && (v.text === undefined || typeof v.text === 'string');
    case 'error':
      return isId(v.inReplyTo) && (v.kind === 'input' || v.kind === 'cancelled' || v.kind === 'internal') && typeof v.message === 'string';
    default:
      return false;
  }
}
