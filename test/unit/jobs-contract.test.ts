/** The typed job contract (src/shared/jobs): flags derived from the declarations, requests to and from argv, the check of outside requests. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseArgs } from '../../src/engine/cli/args';
import { LensError } from '../../src/shared/errors';
import { JOB_NAMES, JobRequest, JOBS } from '../../src/shared/jobs/jobs';
import { FlagKind, FlagSpec, flagSpecs } from '../../src/shared/jobs/options';
import { argvOf, requestFromArgs, resolveRequest } from '../../src/shared/jobs/request';

const COMMON = ['json:string', 'device:string:auto|cpu|gpu=auto', 'quiet:bool'];
const RULES = 'peft|peft-safe|fp32-cast';

/** Every command's flags as the CLI took them before the contract (CLI.md), in their order. */
const FLAGS: Record<string, string[]> = {
  census: ['adapter:string', 'target:list'],
  estimate: ['adapter:string', 'r:number', 'alpha:number', 'target:list'],
  merge: ['base:string', 'adapter:string', 'out:string', 'dtype:string:fp32|fp16|bf16', `rule:string:${RULES}=peft`, 'shard-size:number'],
  extract: ['base:string', 'finetuned:string', 'out:string'],
  compare: ['base:string', 'adapter:string', 'finetuned:string', 'task-vector:string', 'out:string', 'tolerance:number=1e-5', 'save-deltas:bool'],
  precision: ['base:string', 'adapter:string', 'dtypes:list', `rule:string:${RULES}`],
  validate: ['base:string', 'adapter:string', 'out:string', 'dtypes:list', `rule:string:${RULES}=peft`, 'tolerance:number=1e-5', 'keep-models:bool'],
  mask: ['base:string', 'adapters:list', 'budget:number', 'out:string'],
  compress: ['mask:string', 'base:string', 'adapter:list', 'finetuned:list', 'out:string'],
  decompose: [
    'mask:string', 'base:string', 'dictionary:list', 'target:string', 'method:string:nnls|omp|lasso=nnls', 'truth:string', 'tol:number=1e-6',
    'support-threshold:number=0.001', 'min-t:number=5', 'lambda:number=0.001', 'positive:bool', 'max-residual:number=0.1',
  ],
  convert: ['in:string', 'out:string', 'base:string'],
  spectrum: ['adapter:string'],
  resize: ['adapter:string', 'out:string', 'rank:number', 'energy:number', 'base:string'],
  'extract-lora': ['base:string', 'finetuned:string', 'out:string', 'rank:number', 'energy:number', 'oversample:number', 'power-iterations:number'],
  combine: ['adapters:list', 'weights:string', 'out:string', 'rank:number'],
  stats: ['model:string', 'base:string', 'adapter:string', 'tensor:string', 'bins:number', 'grid:number'],
};

/** `name:kind[:choice|choice][=default]` as a flag spec. */
function spec(w: string): [string, FlagSpec] {
  const [decl, dflt] = w.split('=');
  const [name, kind, choices] = decl.split(':');
  const s: FlagSpec = { kind: kind as FlagKind };
  if (choices) s.choices = choices.split('|');
  if (dflt !== undefined) s.default = kind === 'number' ? Number(dflt) : dflt;
  return [name, s];
}

test('the flags derived from the declarations are the CLI flags, in order', () => {
  assert.deepEqual(JOB_NAMES, ['census', 'estimate', 'merge', 'extract', 'compare', 'precision', 'validate', 'mask', 'compress', 'decompose', 'convert', 'spectrum', 'resize', 'extract-lora', 'combine', 'stats']);
  for (const name of JOB_NAMES) {
    const got = Object.entries(flagSpecs(JOBS[name])).map(([f, s]) => [f, { ...s, ...(s.choices ? { choices: [...s.choices] } : {}) }]);
    assert.deepEqual(got, [...FLAGS[name], ...COMMON].map(spec), name);
  }
});

const requests: JobRequest[] = [
  { job: 'census', path: '/m', adapter: '/a', target: ['q_proj,v_proj'], json: '-' },
  { job: 'estimate', path: '/m/config.json', r: 8, alpha: 16, target: ['q_proj'] },
  { job: 'merge', base: '/b', adapter: '/a', out: '/o', dtype: 'bf16', rule: 'peft-safe', shardSize: 1000, device: 'cpu' },
  { job: 'compare', base: '/b', adapter: '/a', taskVector: '/tv.safetensors', out: '/o', tolerance: 0.5, saveDeltas: true, quiet: true },
  { job: 'validate', base: '/b', adapter: '/a', out: '/o', dtypes: ['fp16', 'bf16'], keepModels: true },
  { job: 'mask', base: '/b', adapters: ['/a1', '/a2'], budget: 1000, out: '/o' },
  { job: 'compress', mask: '/k', base: '/b', inputs: [{ flag: 'adapter', value: '/a1' }, { flag: 'finetuned', value: '/f' }, { flag: 'adapter', value: '/a2' }], out: '/o' },
  { job: 'decompose', mask: '/k', base: '/b', dictionary: ['/a1', '/a2'], target: '/t', method: 'omp', minT: 3, positive: true },
  { job: 'convert', in: '/m/pytorch_model.bin', out: '/o.safetensors' },
  { job: 'spectrum', adapter: '/a' },
  { job: 'resize', adapter: '/a', out: '/o', energy: 0.9 },
  { job: 'extract-lora', base: '/b', finetuned: '/f', out: '/o', rank: 16, powerIterations: 3 },
  { job: 'combine', adapters: ['/a1', '/a2'], weights: '0.5,2', out: '/o', rank: 8 },
  { job: 'stats', adapter: '/a', base: '/b', tensor: 'model.layers.0.self_attn.q_proj.weight', bins: 64, grid: 32 },
];

test('a request survives its command line: argv, parsed, is the same request with the defaults applied', () => {
  for (const req of requests) {
    const [job, ...rest] = argvOf(req);
    assert.equal(job, req.job);
    const d = JOBS[req.job];
    const parsed = parseArgs(job, rest, flagSpecs(d), 'positional' in d ? 1 : 0);
    assert.deepEqual(resolveRequest(requestFromArgs(req.job, parsed)), resolveRequest(req), job);
  }
  assert.deepEqual(argvOf(requests[6]).slice(5), ['--out', '/o', '--adapter', '/a1', '--finetuned', '/f', '--adapter', '/a2']);
});

test('requests from outside are checked in the CLI words, and given the CLI defaults', () => {
  assert.deepEqual(resolveRequest({ job: 'merge', base: '/b' }), { job: 'merge', base: '/b', rule: 'peft', device: 'auto' });
  const refused = (r: unknown, message: string): void => {
    assert.throws(() => resolveRequest(r), (e: unknown) => e instanceof LensError && e.message === message, JSON.stringify(r));
  };
  refused({ job: 'frob' }, 'lora-lens: unknown command "frob"');
  refused({ job: 'merge', bogus: 1 }, 'lora-lens merge: unknown option --bogus (options: --base, --adapter, --out, --dtype, --rule, --shard-size, --json, --device, --quiet)');
  refused({ job: 'merge', dtype: 'fp8' }, 'lora-lens merge: --dtype must be one of fp32, fp16, bf16 (got "fp8")');
  refused({ job: 'merge', shardSize: '5' }, 'lora-lens merge: --shard-size must be a number (got "5")');
  refused({ job: 'mask', adapters: [] }, 'lora-lens mask: --adapters needs at least one value');
  refused({ job: 'compare', saveDeltas: 1 }, 'lora-lens compare: --save-deltas must be true or false');
  refused({ job: 'compress', inputs: [{ flag: 'dictionary', value: '/a' }] }, 'lora-lens compress: inputs must be a list of { flag, value } with flag one of adapter, finetuned');
  refused({ job: 'census', path: 3 }, 'lora-lens census: path must be a path');
});
