/**
 * `runJob`: the one way a job runs, for the CLI (after parsing argv) and for the engine process (a
 * typed request from the extension). Checks the request, refuses outputs over inputs before any work,
 * creates the kernels the request's device chose on first use, and disposes of them at the end.
 */
import { JobName, JobRequest, JOBS } from '../../shared/jobs/jobs';
import { flagSpecs } from '../../shared/jobs/options';
import { argsOfRequest, resolveRequest } from '../../shared/jobs/request';
import { KernelContext, Kernels } from '../kernels/kernels';
import { selectKernels } from '../kernels/select';
import { JobContext } from '../util/job';
import { assertSafeOutputs } from '../util/outputs';
import { census } from './census';
import { compare } from './compare';
import { compress } from './compress';
import { convert } from './convert';
import { decompose } from './decompose';
import { estimate } from './estimate';
import { extract } from './extract';
import { mask } from './mask';
import { merge } from './merge';
import { precision } from './precision';
import { combine, extractLora, resize, spectrum } from './lowrank';
import { JobOutcome, Runner } from './runner';
import { stats } from './stats';
import { validate } from './validate';

const RUNNERS: { [K in JobName]: Runner<K> } = { census, estimate, merge, extract, compare, precision, validate, mask, compress, decompose, convert, spectrum, resize, 'extract-lora': extractLora, combine, stats };

/** `request` is checked here: from the CLI it is parsed argv, from the engine process whatever came over IPC. */
export async function runJob(request: JobRequest | unknown, ctx: JobContext): Promise<JobOutcome> {
  const req = resolveRequest(request);
  const { positional, flags } = argsOfRequest(req);
  assertSafeOutputs(positional, flags, flagSpecs(JOBS[req.job]));
  let kernels: Kernels | undefined;
  const rctx: KernelContext = { ...ctx, kernels: async () => (kernels ??= await selectKernels(req.device, ctx)) };
  try {
    return await (RUNNERS[req.job] as Runner<JobName>)(req, rctx);
  } finally {
    await kernels?.dispose();
  }
}
