import { JobName, JobReport, ResolvedRequest } from '../../shared/jobs/jobs';
import { Kernels } from '../kernels/kernels';
import { JobContext } from '../util/job';

export interface RunContext extends JobContext {
  /** The numeric backend the request's `device` chose, created on first use. */
  kernels(): Promise<Kernels>;
}

export interface JobOutcome<K extends JobName = JobName> {
  /** Written to --json FILE. */
  report: JobReport<K>;
  /** The readable report, printed on stdout. */
  text: string;
}

/** Runs one job from its checked request. */
export type Runner<K extends JobName> = (req: ResolvedRequest<K>, ctx: RunContext) => Promise<JobOutcome<K>>;

/** `--dtypes fp16,bf16` and `--dtypes fp16 bf16` alike. */
export function splitList(values: string[]): string[] {
  return values.flatMap((v) => v.split(',')).map((v) => v.trim()).filter((v) => v !== '');
}
