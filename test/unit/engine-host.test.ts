/** The engine process end to end: EngineProcess forking the built dist/engine-host.js (`npm run build` first). */
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { JobRequest } from '../../src/shared/jobs/jobs';
import { readCensusReport } from '../../src/shared/jobs/reports/census';
import { censusTensors } from '../../src/extension/census/treeModel';
import { ProgressInfo } from '../../src/shared/protocol';
import { EngineProcess, JobError } from '../../src/extension/engine/engineProcess';
import { removeDeadPartialFiles, removeLeftoversOf } from '../../src/shared/leftovers';
import { loraPair, peftConfig, tmpDir, writeAdapter, writeModel } from './helpers/builders';

const HOST = path.resolve(__dirname, '../../../dist/engine-host.js');
const root = tmpDir('lora-lens-engine-host-');
const H = 256;
const LAYERS = 24;
const names = Array.from({ length: LAYERS }, (_, l) => [`model.layers.${l}.self_attn.q_proj.weight`, `model.layers.${l}.self_attn.v_proj.weight`]).flat();
const base = writeModel(path.join(root, 'base'), { model_type: 'llama' }, names.map((name) => ({ name, shape: [H, H] })));
const adapter = writeAdapter(
  path.join(root, 'adapter'),
  peftConfig({ r: 4, lora_alpha: 8, target_modules: ['q_proj', 'v_proj'] }),
  names.flatMap((n, i) => loraPair(n.replace(/\.weight$/, ''), 4, H, H, 3 + i)),
);

function engine(): { e: EngineProcess; log: string[] } {
  assert.ok(fs.existsSync(HOST), 'run npm run build first');
  const log: string[] = [];
  return { e: new EngineProcess(HOST, (l) => log.push(l)), log };
}

async function rejection(p: Promise<unknown>): Promise<JobError> {
  try {
    await p;
  } catch (e) {
    assert.ok(e instanceof JobError, String(e));
    return e;
  }
  assert.fail('the job should have failed');
}

test('runs a typed job request and answers with its report and progress', async () => {
  const { e } = engine();
  try {
    const progress: ProgressInfo[] = [];
    const r = await e.run({ job: 'census', path: base, adapter }, { onProgress: (p) => progress.push(p) }).done;
    // The report arrives as data, read with its job's reader.
    const { summary } = readCensusReport(r.report);
    assert.equal(summary?.tensors, names.length);
    assert.equal(summary?.loraTargetTensors, names.length);
    assert.ok(censusTensors(r.report).every((t) => t.loraTarget));
    assert.match(r.text ?? '', /48 tensors/);
    assert.deepEqual(progress.at(-1), { phase: 'census', done: names.length, total: names.length });
    // --json FILE works as on the CLI.
    const json = path.join(root, 'census.json');
    await e.run({ job: 'census', path: base, json }).done;
    assert.equal(JSON.parse(fs.readFileSync(json, 'utf8')).summary.tensors, names.length);
  } finally {
    e.dispose();
  }
});

test('bad input, unknown jobs and malformed requests come back as input errors', async () => {
  const { e } = engine();
  try {
    const missing = path.join(root, 'nope');
    const err = await rejection(e.run({ job: 'census', path: missing }).done);
    assert.equal(err.kind, 'input');
    assert.ok(err.message.includes(missing), err.message);
    // Requests from outside the types: the engine checks them in full.
    const malformed = (r: unknown): JobRequest => r as JobRequest;
    assert.equal((await rejection(e.run(malformed({ job: 'frobnicate' })).done)).kind, 'input');
    const bogus = await rejection(e.run(malformed({ job: 'merge', base, bogus: 'x' })).done);
    assert.equal(bogus.kind, 'input');
    assert.match(bogus.message, /^lora-lens merge: unknown option --bogus \(options: --base, --adapter, --out, --dtype, --rule, --shard-size, --json, --device, --quiet\)$/);
    const rule = await rejection(e.run(malformed({ job: 'merge', base, adapter, out: path.join(root, 'm'), dtype: 'bf16', rule: 'nope' })).done);
    assert.equal(rule.message, 'lora-lens merge: --rule must be one of peft, peft-safe, fp32-cast (got "nope")');
    assert.equal((await rejection(e.run(malformed({ job: 'merge', base, adapter, dtype: 'bf16' })).done)).message, 'lora-lens merge: --out is required');
    // The engine survives bad input: the same process answers the next job.
    const pid = e.pid;
    await e.run({ job: 'census', path: base }).done;
    assert.equal(e.pid, pid);
  } finally {
    e.dispose();
  }
});

test('a job cancelled while queued or running writes nothing', async () => {
  const { e } = engine();
  try {
    const out1 = path.join(root, 'merged-1');
    const out2 = path.join(root, 'merged-2');
    const request = (out: string): JobRequest<'merge'> => ({ job: 'merge', base, adapter, out, dtype: 'bf16' });
    let cancelRunning = (): void => {};
    const running = e.run(request(out1), { onProgress: () => cancelRunning() });
    cancelRunning = running.cancel;
    const queued = e.run(request(out2));
    queued.cancel();
    const [a, b] = await Promise.allSettled([running.done, queued.done]);
    assert.equal(b.status, 'rejected');
    assert.equal(((b as PromiseRejectedResult).reason as JobError).kind, 'cancelled');
    // The running one stops at its next tensor (48 of them: the cancel arrives long before the last).
    assert.equal(a.status, 'rejected');
    assert.equal(((a as PromiseRejectedResult).reason as JobError).kind, 'cancelled');
    assert.ok(!fs.existsSync(out1));
    assert.ok(!fs.existsSync(out2));
    assert.deepEqual(fs.readdirSync(root).filter((f) => f.includes('.partial-')), []);
  } finally {
    e.dispose();
  }
});

test('a crashed engine fails its job as crashed, its partial output is removed, the next job restarts it', async () => {
  const { e, log } = engine();
  try {
    const out = path.join(root, 'merged-crash');
    let killed = false;
    const job = e.run({ job: 'merge', base, adapter, out, dtype: 'fp16' }, {
      outputs: [out],
      onProgress: () => {
        if (killed) return;
        killed = true;
        process.kill(e.pid as number, 'SIGKILL');
      },
    });
    const pid = e.pid;
    const err = await rejection(job.done);
    assert.equal(err.kind, 'crashed');
    assert.match(err.message, /SIGKILL/);
    assert.ok(!fs.existsSync(out));
    assert.deepEqual(fs.readdirSync(root).filter((f) => f.includes('.partial-')), []);
    assert.equal(e.running, false);
    const r = await e.run({ job: 'census', path: base }).done;
    assert.equal(readCensusReport(r.report).summary?.tensors, names.length);
    assert.notEqual(e.pid, pid);
    assert.ok(log.some((l) => l.includes('engine stopped (signal SIGKILL)')), log.join('\n'));
    assert.ok(log.some((l) => l.startsWith(`[job ${job.id}] failed (crashed): `) && l.endsWith('partial output removed')), log.join('\n'));
  } finally {
    e.dispose();
  }
});

test("removeLeftoversOf removes only that process's partials and lock beside an output; report temps of dead runs go", () => {
  const dir = tmpDir('lora-lens-partials-');
  const out = path.join(dir, 'out');
  const host = os.hostname();
  for (const n of ['.out.partial-42-abc', '.out.partial-43-abc', '.other.partial-42-x', 'out2', '..out.lock.partial-42-q1']) fs.mkdirSync(path.join(dir, n));
  fs.writeFileSync(path.join(dir, '.out.lock.stale-42'), '');
  fs.writeFileSync(path.join(dir, '.out.lock'), JSON.stringify({ pid: 42, host }));
  fs.writeFileSync(path.join(dir, '.out.partial-42-notours!'), 'a user file that only looks alike');
  removeLeftoversOf(out, 42);
  assert.deepEqual(fs.readdirSync(dir).sort(), ['.other.partial-42-x', '.out.partial-42-notours!', '.out.partial-43-abc', 'out2']);
  // A lock another job holds now stays.
  fs.writeFileSync(path.join(dir, '.out.lock'), JSON.stringify({ pid: 43, host }));
  removeLeftoversOf(out, 42);
  assert.ok(fs.existsSync(path.join(dir, '.out.lock')));
  // Report temps: files of dead processes go; a live process's, a folder, and a look-alike stay.
  const dead = spawnSync(process.execPath, ['-e', '0']).pid!;
  const report = path.join(dir, 'r.json');
  for (const n of [`.r.json.partial-${dead}-a1b2c3`, `.r.json.partial-${process.ppid}-a1b2c3`, '.r.json.partial-x-1', `.r.json.partial-${dead}-toolongname`]) fs.writeFileSync(path.join(dir, n), '{');
  fs.mkdirSync(path.join(dir, `.r.json.partial-${dead}-d1r`));
  removeDeadPartialFiles(report);
  assert.deepEqual(fs.readdirSync(dir).filter((n) => n.startsWith('.r.json')).sort(), [`.r.json.partial-${dead}-d1r`, `.r.json.partial-${dead}-toolongname`, `.r.json.partial-${process.ppid}-a1b2c3`, '.r.json.partial-x-1'].sort());
});

test('tensor names reach the log, notifications and toasts with control characters escaped', async () => {
  const evil = 'evil\u001b[2J\u202e.weight';
  const dir = path.join(root, 'control');
  writeModel(path.join(dir, 'base'), { model_type: 'llama' }, [
    { name: 'model.layers.0.self_attn.q_proj.weight', shape: [8, 8] },
    { name: evil, shape: [4], data: new Float32Array([1, NaN, 2, 3]) },
  ]);
  writeAdapter(path.join(dir, 'adapter'), peftConfig({ r: 2, target_modules: ['q_proj'] }), loraPair('model.layers.0.self_attn.q_proj', 2, 8, 8));
  fs.writeFileSync(path.join(dir, 'bad.safetensors'), header({ [evil]: { dtype: 'F32', shape: [2], data_offsets: [0, 4] } }, 4));
  const { e, log } = engine();
  try {
    const progress: ProgressInfo[] = [];
    const warnings: string[] = [];
    await e.run({ job: 'merge', base: path.join(dir, 'base'), adapter: path.join(dir, 'adapter'), out: path.join(dir, 'merged'), dtype: 'bf16', device: 'cpu' }, {
      onProgress: (p) => progress.push(p),
      onLog: (_, m) => warnings.push(m),
    }).done;
    const err = await rejection(e.run({ job: 'census', path: path.join(dir, 'bad.safetensors') }).done);
    assert.equal(err.kind, 'input');
    const seen = [...log, ...warnings, err.message, ...progress.map((p) => `${p.phase} ${p.tensor ?? ''}`)];
    assert.ok(warnings.some((w) => w.includes('evil\\x1b[2J\\u202e.weight')), warnings.join('\n'));
    assert.ok(err.message.includes('evil\\x1b[2J\\u202e.weight'), err.message);
    assert.ok(progress.some((p) => p.tensor?.includes('\\x1b')), 'the progress names the tensor, escaped');
    // eslint-disable-next-line no-control-regex -- the point
    for (const s of seen) assert.doesNotMatch(s, /[\u0000-\u0008\u000b-\u001f\u007f-\u009f\u202e]/, s);
  } finally {
    e.dispose();
  }
});

/** A safetensors file from a header object and `dataBytes` zero bytes of data. */
function header(h: unknown, dataBytes: number): Buffer {
  const json = Buffer.from(JSON.stringify(h), 'utf8');
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  return Buffer.concat([len, json, Buffer.alloc(dataBytes)]);
}
