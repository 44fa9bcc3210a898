// The Node host: one process, one worker_thread per workspace, the host protocol of docs/hosts.md (one JSON
// object per line on stdin/stdout):
//   service -> host: load {workspace, revision, script, folder} · run {id, workspace, revision, fn, params}
//                    abort {id} · compile {id, functions: [{name, source, body}]} · evict {workspace} · shutdown
//   host -> service: ready {protocol, node} · result {id, status, ...} · compiled {id, errors}
//                    protocol_error {detail}, then exit 2
// The service owns the policy (which workspaces stay loaded, LRU, idle time, every run's deadline); the
// host owns the mechanism (workers, memory limits, ending a worker whose run the service aborts).
// Configuration arrives as JSON in argv[2].
import { Worker } from 'node:worker_threads';
import readline from 'node:readline';
import vm from 'node:vm';
import { performance } from 'node:perf_hooks';

const PROTOCOL = 1;
const config = JSON.parse(process.argv[2] ?? '{}');
const WORKER_URL = new URL('./worker.mjs', import.meta.url);
const workerConfig = {
  builtins: config.builtins ?? [],
  maxResultBytes: config.maxResultBytes ?? 10 * 1024 * 1024,
  sharedModules: config.sharedModules ?? null,
  packages: config.packages ?? {},
  logLimits: config.logLimits ?? { maxEntries: 1000, maxBytes: 1024 * 1024 },
  egress: config.egress ?? null, // FUNCTIONS_EGRESS when the guard enforces it: refusals are explained
};
const now = () => performance.timeOrigin + performance.now();
const writeLine = (line) => process.stdout.write(`${line}\n`);
const send = (message) => writeLine(JSON.stringify(message));
// Our stdout is the protocol channel: nothing else may print there.
console.log = console.info = console.debug = (...args) => process.stderr.write(`${args.join(' ')}\n`);

const slots = new Map(); // workspace id -> Slot
const running = new Map(); // run id -> the WorkerHandle it was posted to, until it answers

function fail(id, status, message, name) {
  running.delete(id);
  send({ type: 'result', id, status, error: name ? { name, message } : { message }, logs: [] });
}

// A worker's reply is one JSON line for the run it was asked: it must start with that run's id and hold no
// line break (the service reads one message per line).
const isReplyLine = (line, id) =>
  typeof line === 'string' && line.startsWith(`{"type":"result","id":${id},`) && !line.includes('\n');

// The flags a worker must share with the host, which it does not inherit: the permission model's (a worker
// lives under the same model), the vm modules flag (ES modules in the sandbox) and the quieted warnings.
const PERMISSION_FLAGS = process.execArgv.filter((flag) =>
  /^--(experimental-permission|permission|allow-|experimental-vm-modules$|disable-warning=)/.test(flag),
);

// One worker thread and the runs in flight on it.
class WorkerHandle {
  constructor() {
    this.slot = null;
    this.pending = new Map(); // run id -> { timer, receivedAt }
    this.spawnedAt = now();
    this.readyAt = null;
    this.retiring = false;
    this.dead = false;
    this.ranOnce = false;
    this.worker = new Worker(WORKER_URL, {
      workerData: { script: null, config: workerConfig },
      resourceLimits: { maxOldGenerationSizeMb: config.maxOldGenerationSizeMb ?? 100 },
      env: {},
      argv: [],
      execArgv: PERMISSION_FLAGS, // without them, Node 20 drops the permission model inside a worker
      stdout: true, // a worker's own stdout must never reach the protocol channel
      stderr: false,
    });
    this.worker.stdout.resume();
    this.worker.on('message', (message) => this.onMessage(message));
    this.worker.on('error', (err) => this.onError(err));
    this.worker.on('exit', (code) => this.onExit(code));
  }

  // Give this (spare) worker its workspace: from here on, a start-up counts from now.
  adopt(slot) {
    this.slot = slot;
    this.spawnedAt = now();
    this.worker.postMessage({ type: 'load', script: slot.script, folder: slot.folder });
    return this;
  }

  post(id, fn, params) {
    const cold = !this.ranOnce; // the first run of a worker waits for its start-up
    this.ranOnce = true;
    this.pending.set(id, { receivedAt: now(), cold });
    this.worker.postMessage({ id, fn, params: JSON.stringify(params ?? {}) });
  }

  onMessage(message) {
    if (message.type === 'ready') {
      this.readyAt = message.at;
      return;
    }
    const entry = this.pending.get(message.id);
    if (!entry) return; // its run already timed out
    if (!isReplyLine(message.line, message.id)) {
      // A worker runs untrusted code: a line that could answer another run, or split in two, is refused.
      return this.abandon('failed', 'the workspace worker sent a malformed reply and was stopped', 'Error');
    }
    this.pending.delete(message.id);
    running.delete(message.id);
    const coldMs = entry.cold ? (this.readyAt ?? now()) - this.spawnedAt : 0;
    const host = JSON.stringify({ receivedAt: entry.receivedAt, cold: entry.cold, coldMs });
    writeLine(`${message.line.slice(0, -1)},"host":${host}}`);
    if (this.retiring && this.pending.size === 0) this.stop();
  }

  // The service's deadline for run `id` passed: the worker goes (nothing else stops code in a loop).
  // The run's own answer confirms it; the others on this worker are aborted.
  abort(id) {
    this.pending.delete(id);
    fail(id, 'aborted', 'the run was stopped at its deadline');
    this.abandon('aborted', 'the workspace worker was stopped because another run on it timed out');
  }

  onError(err) {
    if (this.dead) return;
    if (err?.code === 'ERR_WORKER_OUT_OF_MEMORY') {
      this.abandon(
        'resource_limit',
        `the function ran out of memory (NODE_WORKER_MAX_OLD_GENERATION_SIZE_MB=${config.maxOldGenerationSizeMb ?? 100})`,
      );
    } else {
      this.abandon('failed', `the workspace could not run: ${err?.message ?? err}`, err?.name ?? 'Error');
    }
  }

  onExit(code) {
    if (!this.dead) this.abandon('aborted', `the workspace worker stopped unexpectedly (exit code ${code})`);
  }

  // Answer every run still in flight, then drop this worker; the workspace's next run starts a fresh one.
  abandon(status, message, name) {
    for (const id of this.pending.keys()) fail(id, status, message, name);
    this.pending.clear();
    this.stop();
  }

  stop() {
    if (this.dead) return;
    this.dead = true;
    if (spare === this) spare = null;
    if (this.slot?.handle === this) this.slot.handle = null;
    this.worker.terminate();
  }

  // Runs in flight finish first (the service's deadlines still apply); nothing new is sent here.
  retire() {
    this.retiring = true;
    if (this.slot.handle === this) this.slot.handle = null;
    if (this.pending.size === 0) this.stop();
  }
}

class Slot {
  constructor(id, revision, script, folder) {
    Object.assign(this, { id, revision, script, folder, handle: null });
  }

  worker() {
    if (!this.handle) this.handle = takeSpare().adopt(this);
    return this.handle;
  }
}

// One booted worker waits without a workspace, so a cold run skips the thread's start-up.
let spare = null;

function takeSpare() {
  const taken = spare ?? new WorkerHandle();
  spare = null;
  setImmediate(() => {
    spare ??= new WorkerHandle();
  });
  return taken;
}

const AsyncFunction = (async function () {}).constructor; // the host's own: parse only, never called

function compileError(name, err) {
  const stack = String(err?.stack ?? '');
  const where = /^[^\n]*:(\d+)\n[^\n]*\n(\s*)\^/.exec(stack);
  const line = where ? Math.max(1, Number(where[1]) - 1) : 1; // line 1 of the source is our wrapper
  const column = where ? where[2].length + 1 : 1;
  return { function: name, line, column, message: `${err?.name ?? 'SyntaxError'}: ${err?.message ?? err}` };
}

const handlers = {
  load({ workspace, revision, script, folder }) {
    slots.get(workspace)?.handle?.retire();
    slots.set(workspace, new Slot(workspace, revision, script, folder ?? null));
  },
  run({ id, workspace, revision, fn, params }) {
    const slot = slots.get(workspace);
    if (!slot || slot.revision !== revision) return send({ type: 'result', id, status: 'not_loaded' });
    const handle = slot.worker();
    running.set(id, handle);
    handle.post(id, fn, params);
  },
  abort({ id }) {
    const handle = running.get(id);
    if (handle?.pending.has(id)) handle.abort(id);
    else send({ type: 'result', id, status: 'aborted', logs: [] }); // it answered meanwhile: confirm anyway
  },
  compile({ id, functions }) {
    const errors = [];
    for (const { name, source, body } of functions) {
      try {
        new vm.Script(source, { filename: name }); // parse only: nothing of it runs here
      } catch (err) {
        errors.push(compileError(name, err));
        continue;
      }
      // `}, code(), function () {` parses inside the wrapper yet closes it: code that would run while
      // the workspace loads. V8 parses a constructor's body alone and wants one function literal.
      try {
        if (body !== undefined) new AsyncFunction('parameters', body);
      } catch (err) {
        const message = 'SyntaxError: the code closes its function early (an unmatched "}")';
        errors.push({ function: name, line: 1, column: 1, message });
      }
    }
    send({ type: 'compiled', id, errors });
  },
  evict({ workspace }) {
    slots.get(workspace)?.handle?.retire();
    slots.delete(workspace);
  },
  shutdown() {
    spare?.stop();
    for (const slot of slots.values()) slot.handle?.stop();
    process.exit(0);
  },
};

function protocolError(detail) {
  send({ type: 'protocol_error', detail });
  process.exit(2);
}

const input = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
input.on('line', (line) => {
  let message;
  try {
    message = JSON.parse(line);
  } catch (err) {
    return protocolError(`not JSON: ${err.message}`);
  }
  const handler = handlers[message?.type];
  if (!handler) return protocolError(`unknown message type ${JSON.stringify(message?.type)}`);
  handler(message);
});
input.on('close', () => process.exit(0)); // the service went away: so do we

spare = new WorkerHandle();
send({ type: 'ready', protocol: PROTOCOL, node: process.version });
