import { JobName, JobReport, ResolvedRequest } from '../../shared/jobs/jobs';
import { KernelContext } from '../kernels/kernels';

export interface JobOutcome<K extends JobName = JobName> {
  /** Written to --json FILE. */
  report: JobReport<K>;
  /** The readable report, printed on stdout. */
  text: string;
}

/** Runs one job from its checked request; `ctx.kernels()` is the backend the request's `device` chose. */
export type Runner<K extends JobName> = (req: ResolvedRequest<K>, ctx: KernelContext) => Promise<JobOutcome<K>>;

/** `--dtypes fp16,bf16` and `--dtypes fp16 bf16` alike. */
export function splitList(values: string[]): string[] {
  return values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
}
