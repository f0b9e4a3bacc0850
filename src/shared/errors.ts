/**
 * Errors the user can act on: bad input, named by file (and tensor where there is one). The CLI prints
 * `message` as one line and exits 2; anything else is a bug and keeps its stack.
 */
export class LensError extends Error {
  constructor(
    readonly file: string,
    readonly detail: string,
    readonly tensor?: string,
  ) {
    super(`${file}${tensor !== undefined ? `: tensor '${tensor}'` : ''}: ${detail}`);
    this.name = 'LensError';
  }
}
