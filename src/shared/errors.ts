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

/**
 * `text` safe to print on a terminal: C0/C1 control characters (a tensor name holding `ESC[2J` would
 * clear the screen) and bidirectional overrides shown as `\xNN` / `\uNNNN` escapes; line breaks and tabs
 * are kept where `keepLines` says so. Every text the CLI prints goes through here.
 */
export function escapeControl(text: string, keepLines = true): string {
  // eslint-disable-next-line no-control-regex -- matching control characters is the point
  return text.replace(/[\u0000-\u001f\u007f-\u009f\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, (c) => {
    if (keepLines && (c === '\n' || c === '\t')) return c;
    const code = c.charCodeAt(0);
    return code <= 0xff ? `\\x${code.toString(16).padStart(2, '0')}` : `\\u${code.toString(16).padStart(4, '0')}`;
  });
}
