import { LensError } from '../../errors';
import { DECOMPOSE_DEFAULTS, DECOMPOSE_METHODS, DecomposeMethod, readTruth, runDecompose } from '../../jobs/decompose';
import { required } from '../args';
import { CliCommand } from '../command';

export const decomposeCommand: CliCommand = {
  name: 'decompose',
  summary: 'UNMERGE: which dictionary adapters make up a target model or adapter, with what coefficients',
  usage:
    'decompose --mask DIR --base DIR --dictionary DIR... --target DIR [--method nnls|omp|lasso] [--truth FILE.json] ' +
    '[--tol 1e-6] [--support-threshold 1e-3] [--min-t 5] [--lambda 0.001] [--positive] [--max-residual 0.1] [--json F]',
  flags: {
    mask: { kind: 'string' },
    base: { kind: 'string' },
    dictionary: { kind: 'list' },
    target: { kind: 'string' },
    method: { kind: 'string', choices: DECOMPOSE_METHODS, default: 'nnls' },
    truth: { kind: 'string' },
    tol: { kind: 'number', default: DECOMPOSE_DEFAULTS.tol },
    'support-threshold': { kind: 'number', default: DECOMPOSE_DEFAULTS.supportThreshold },
    'min-t': { kind: 'number', default: DECOMPOSE_DEFAULTS.minT },
    lambda: { kind: 'number', default: DECOMPOSE_DEFAULTS.lambda },
    positive: { kind: 'bool' },
    'max-residual': { kind: 'number', default: DECOMPOSE_DEFAULTS.maxResidual },
  },
  maxPositional: 0,
  async run(args, ctx) {
    const c = 'decompose';
    const f = args.flags;
    for (const k of ['tol', 'support-threshold', 'min-t', 'lambda', 'max-residual']) {
      if ((f[k] as number) < 0) throw new LensError(`lora-lens ${c}`, `--${k} must not be negative`);
    }
    const report = await runDecompose(
      {
        mask: required(c, f, 'mask'),
        base: required(c, f, 'base'),
        dictionary: required(c, f, 'dictionary'),
        target: required(c, f, 'target'),
        method: f.method as DecomposeMethod,
        tol: f.tol as number,
        supportThreshold: f['support-threshold'] as number,
        minT: f['min-t'] as number,
        lambda: f.lambda as number,
        positive: f.positive === true,
        maxResidual: f['max-residual'] as number,
        truth: f.truth === undefined ? undefined : readTruth(f.truth as string),
      },
      ctx.kernels,
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
  },
};
