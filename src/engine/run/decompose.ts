import { flagName } from '../../shared/jobs/options';
import { need } from '../../shared/jobs/request';
import { LensError } from '../errors';
import { readTruth, decomposeJob } from '../jobs/decompose';
import { Runner } from './runner';

export const decompose: Runner<'decompose'> = async (req, ctx) => {
  for (const k of ['tol', 'supportThreshold', 'minT', 'lambda', 'maxResidual'] as const) {
    if (req[k] < 0) throw new LensError('lora-lens decompose', `--${flagName(k)} must not be negative`);
  }
  const report = await decomposeJob(
    {
      mask: need(req, 'mask'),
      base: need(req, 'base'),
      dictionary: need(req, 'dictionary'),
      target: need(req, 'target'),
      method: req.method,
      tol: req.tol,
      supportThreshold: req.supportThreshold,
      minT: req.minT,
      lambda: req.lambda,
      positive: req.positive === true,
      maxResidual: req.maxResidual,
      truth: req.truth === undefined ? undefined : readTruth(req.truth),
    },
    ctx,
  );
  const width = Math.max(...report.dictionary.map((d) => d.name.length));
  const text = [
    `decompose (${report.method}): ${report.verdict.toUpperCase()}`,
    report.explanation,
    ...report.dictionary.map((d) => `  ${d.name.padEnd(width)}  ${d.coefficient.toPrecision(6).padStart(12)}${d.inSupport ? '  *' : ''}`),
    `relative residual ${report.relativeResidual.toExponential(3)}, reconstruction error ${report.reconstructionError.toExponential(3)}`,
    ...(report.roundingFloor > 0 ? [`the target's storage rounding alone would leave a relative residual of about ${report.roundingFloor.toExponential(2)}`] : []),
    ...(report.precision !== undefined
      ? [`against the truth: precision ${report.precision ?? 'n/a'}, recall ${report.recall ?? 'n/a'}, coefficient error ${report.coefficientError?.toExponential(3) ?? 'n/a'}`]
      : []),
  ];
  return { report, text: text.join('\n') };
};
