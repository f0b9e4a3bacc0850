// Bad input is a shared notion (the extension's viewer reports it too); cancellation is the engine's.
export { LensError } from '../shared/errors';

/** Raised when a job is cancelled (SIGINT or a cancel message); outputs are cleaned up by the job. */
export class CancelledError extends Error {
  constructor() {
    super('cancelled');
    this.name = 'CancelledError';
  }
}
