/** Validation of the engine IPC messages (src/shared/protocol.ts): both sides drop anything malformed. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isFromEngine, isToEngine } from '../../src/shared/protocol';

test('requests to the engine', () => {
  assert.ok(isToEngine({ type: 'run', messageId: 1, request: { job: 'census', path: '/m' } }));
  assert.ok(isToEngine({ type: 'cancel', inReplyTo: 1 }));
  for (const bad of [
    null,
    [],
    { type: 'run', messageId: -1, request: { job: 'census' } },
    { type: 'run', messageId: 1.5, request: { job: 'census' } },
    { type: 'run', messageId: 1, request: ['census'] },
    { type: 'run', messageId: 1, request: { path: '/m' } },
    { type: 'run', messageId: 1, command: 'census', args: [] },
    { type: 'cancel' },
    { type: 'exit' },
  ]) {
    assert.equal(isToEngine(bad), false, JSON.stringify(bad));
  }
});

test('answers from the engine', () => {
  for (const ok of [
    { type: 'ready', pid: 12, version: '0.1.0' },
    { type: 'progress', inReplyTo: 1, progress: { phase: 'merge bf16', done: 3, total: 9, tensor: 'w' } },
    { type: 'log', inReplyTo: 1, level: 'warn', message: 'fan_in_fan_out disagrees' },
    { type: 'result', inReplyTo: 1, report: null },
    { type: 'result', inReplyTo: 1, report: { a: 1 }, text: 'done' },
    { type: 'error', inReplyTo: 1, kind: 'cancelled', message: 'cancelled' },
  ]) {
    assert.ok(isFromEngine(ok), JSON.stringify(ok));
  }
  for (const bad of [
    { type: 'progress', inReplyTo: 1, progress: { phase: 'x', done: '3', total: 9 } },
    { type: 'log', inReplyTo: 1, level: 'debug', message: 'x' },
    { type: 'result', inReplyTo: 1 },
    { type: 'error', inReplyTo: 1, kind: 'oops', message: 'x' },
    { type: 'error', kind: 'input', message: 'x' },
  ]) {
    assert.equal(isFromEngine(bad), false, JSON.stringify(bad));
  }
});
