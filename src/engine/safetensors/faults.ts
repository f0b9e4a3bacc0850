/**
 * Injected write failures, for tests of a full disk without one (CI cannot mount a tiny tmpfs):
 * `LORA_LENS_WRITE_FAULT=ENOSPC` fails every write of output bytes with that errno code,
 * `LORA_LENS_WRITE_FAULT=ENOSPC@N` once the process has written N bytes. Every output write goes
 * through `chargeWrite`, so a test sees exactly what a real full disk would do to a job.
 * `HANG@N` instead spins in synchronous code for ever at that point (a job stuck mid-output, for tests
 * that it still answers SIGINT and leaves nothing behind).
 */
export const WRITE_FAULT_ENV = 'LORA_LENS_WRITE_FAULT';

let written = 0;

/** Counts `n` bytes about to be written and throws the injected errno error when the fault is due. */
export function chargeWrite(n: number, syscall = 'write'): void {
  const spec = process.env[WRITE_FAULT_ENV];
  if (!spec) return;
  const [code, after] = spec.split('@');
  written += n;
  if (after !== undefined && written <= Number(after)) return;
  if (code === 'HANG') for (;;);
  const e = new Error(`${code}: injected write failure (${WRITE_FAULT_ENV})`) as NodeJS.ErrnoException;
  e.code = code;
  e.syscall = syscall;
  throw e;
}
