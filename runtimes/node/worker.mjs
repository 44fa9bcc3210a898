// One worker thread per workspace: loads the workspace's generated index.js once into a vm context
// (sandbox.mjs) and answers `run` messages from the host. It outlives single runs, so `cache` survives.
import { parentPort, workerData } from 'node:worker_threads';
import { performance } from 'node:perf_hooks';
import { loadWorkspace } from './sandbox.mjs';
import { toJson, NotSerializable } from './results.mjs';
import { mapStack } from './stacks.mjs';

const { script, folder, config } = workerData;
let sandbox = null;
let lines = {}; // the script's own table: function name -> [first, last] line of its code
const now = () => performance.timeOrigin + performance.now();

// `fetch failed` says nothing by itself: the causes say what failed (a refused address, a DNS name).
function withCauses(error) {
  let message = error.message;
  let cause = error.cause;
  for (let depth = 0; depth < 3 && cause !== null && typeof cause === 'object'; depth += 1) {
    if (typeof cause.message === 'string' && cause.message && !message.includes(cause.message)) {
      message += `: ${cause.message}`;
    }
    cause = cause.cause;
  }
  return message;
}

function describeThrown(value) {
  if (value !== null && typeof value === 'object' && typeof value.message === 'string') {
    const error = { name: String(value.name ?? 'Error'), message: withCauses(value) };
    if (typeof value.stack === 'string') error.stack = mapStack(value.stack, lines);
    return error;
  }
  // `throw "text"` and other non-errors: keep what was thrown, readable.
  return { name: 'Error', message: sandbox.format(value), thrown: typeof value };
}

function reply(id, startedAt, run, fields) {
  sandbox.endRun(run); // its timers are cleared before its answer goes out
  const body = {
    type: 'result',
    id,
    durationMs: now() - startedAt,
    startedAt,
    logs: run.logs.finish(),
    ...fields,
  };
  let line;
  try {
    line = JSON.stringify(body);
  } catch (err) {
    line = JSON.stringify({ ...body, status: 'not_serializable', result: null, error: { message: String(err) } });
  }
  parentPort.postMessage({ id, line });
}

async function answer(id, fn, params, run) {
  const startedAt = now();
  const target = sandbox.functions[fn];
  if (typeof target !== 'function') {
    return reply(id, startedAt, run, {
      status: 'failed',
      error: { name: 'ReferenceError', message: `function ${JSON.stringify(fn)} is not defined in this workspace` },
    });
  }
  let value;
  try {
    value = await sandbox.call(run, target, params);
  } catch (thrown) {
    return reply(id, startedAt, run, { status: 'failed', error: describeThrown(thrown) });
  }
  const durationMs = now() - startedAt; // the function's own time, before we serialize its result
  let resultJson;
  try {
    resultJson = toJson(value, config.maxResultBytes);
  } catch (err) {
    const status = err instanceof NotSerializable ? err.status : 'not_serializable';
    return reply(id, startedAt, run, { status, error: { message: err.message } });
  }
  sandbox.endRun(run);
  const logsOut = run.logs.finish();
  const head = JSON.stringify({ type: 'result', id, status: 'succeeded', durationMs, startedAt, logs: logsOut });
  // The result is spliced in as JSON text: serialized once here, parsed once by the service.
  parentPort.postMessage({ id, line: `${head.slice(0, -1)},"result":${resultJson}}` });
}

async function runOnce({ id, fn, params }) {
  const run = sandbox.startRun();
  try {
    await answer(id, fn, params, run);
  } finally {
    sandbox.endRun(run); // also when answering failed (the InternalError below)
  }
}

// A spare worker starts without a script and gets it in a `load` message, so a workspace's first run
// does not wait for a thread to boot.
function load(text, folder) {
  sandbox = loadWorkspace(text, config, folder ?? null);
  lines = sandbox.lines;
  parentPort.postMessage({ type: 'ready', at: now() });
}

parentPort.on('message', (message) => {
  if (message.type === 'load') return load(message.script, message.folder);
  runOnce(message).catch((err) => {
    parentPort.postMessage({
      id: message.id,
      line: JSON.stringify({ type: 'result', id: message.id, status: 'failed', error: { name: 'InternalError', message: String(err) } }),
    });
  });
});

// A callback the user left behind (a timer, a forgotten promise) must not take the workspace down.
process.on('uncaughtException', (err) => sandbox?.reportStray('uncaught exception', err));
process.on('unhandledRejection', (err) => sandbox?.reportStray('unhandled rejection', err));

if (script) load(script, folder);
