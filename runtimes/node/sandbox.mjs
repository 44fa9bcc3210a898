// The vm context a workspace's functions run in: standard JS globals of its own, plus the few host
// objects the contract promises (console, require, timers, fetch, ...). No process, module, exports,
// __dirname or host require. A vm context is not a security boundary on its own: the worker thread, the
// host's scrubbed environment and the OS limits around the host are the other walls.
import vm from 'node:vm';
import util from 'node:util';
import { EventEmitter } from 'node:events';
import { makeRequire, dynamicImporter } from './modules.mjs';
import { harden, hardenRealm } from './harden.mjs';
import { explainRefusals } from './egress.mjs';
import { bindGlobals } from './globals.mjs';
import { current, startRun, endRun, inRun, makeTimers } from './runs.mjs';

const LEVELS = { log: 'log', info: 'info', warn: 'warn', error: 'error', debug: 'debug', trace: 'debug', dir: 'log' };

// Logs of one run, capped so a log flood ends as a note rather than a memory bomb.
class RunLogs {
  constructor(limits) {
    this.limits = limits;
    this.entries = [];
    this.bytes = 0;
    this.dropped = 0;
    this.droppedBytes = 0;
    this.closed = false;
  }

  add(level, message) {
    if (this.closed) return;
    const size = Buffer.byteLength(message);
    if (this.entries.length >= this.limits.maxEntries || this.bytes + size > this.limits.maxBytes) {
      this.dropped += 1;
      this.droppedBytes += size;
      return;
    }
    this.bytes += size;
    this.entries.push({ level, message, timestamp: new Date().toISOString() });
  }

  finish() {
    if (!this.closed && this.dropped > 0) {
      // The note takes the last place, so a run never returns more than maxEntries entries.
      if (this.entries.length >= this.limits.maxEntries) {
        const last = this.entries.pop();
        this.dropped += 1;
        this.droppedBytes += Buffer.byteLength(last.message);
      }
      this.entries.push({
        level: 'warn',
        message:
          `${this.dropped} more log entries (${this.droppedBytes} bytes) were dropped: a run keeps at most ` +
          `${this.limits.maxEntries} entries and ${this.limits.maxBytes} bytes of logs`,
        timestamp: new Date().toISOString(),
      });
    }
    this.closed = true; // what a forgotten timer logs after the answer went out goes nowhere
    return this.entries;
  }
}

function makeConsole() {
  const write = (level) => (...args) => current()?.logs.add(level, util.format(...args));
  const console = Object.fromEntries(Object.entries(LEVELS).map(([name, level]) => [name, write(level)]));
  console.assert = (condition, ...args) => {
    if (!condition) current()?.logs.add('error', util.format('Assertion failed', ...args));
  };
  console.table = console.log;
  for (const name of ['time', 'timeEnd', 'timeLog', 'count', 'countReset', 'group', 'groupEnd', 'clear']) {
    console[name] = () => {};
  }
  return console;
}

// Web streams (a fetch Response's body is one; cheerio's undici needs them at load), loaded on first use.
const WEB_STREAMS = [
  'ReadableStream', 'WritableStream', 'TransformStream', 'TextEncoderStream', 'TextDecoderStream',
  'CompressionStream', 'DecompressionStream', 'ByteLengthQueuingStrategy', 'CountQueuingStrategy', 'DOMException',
  'File', 'MessagePort', // the class alone (undici checks instances): no MessageChannel or BroadcastChannel to make one
];
const HOST_GLOBALS = [
  'setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate', 'clearImmediate',
  'queueMicrotask', 'structuredClone', 'fetch', 'Headers', 'Request', 'Response', 'FormData', 'Blob',
  'URL', 'URLSearchParams', 'TextEncoder', 'TextDecoder', 'AbortController', 'AbortSignal', 'Event',
  'EventTarget', 'atob', 'btoa', 'Buffer', 'crypto', 'performance', ...WEB_STREAMS,
];
// fetch and its classes load undici: ~20 ms and ~3 MiB per worker. Most functions never fetch, so those
// stay lazy (the first use in a worker pays); the rest are read when the worker boots.
const ON_FIRST_USE = new Set(['fetch', 'Headers', 'Request', 'Response', 'FormData', 'Blob', ...WEB_STREAMS]);
const HOST_VALUES = Object.fromEntries(
  HOST_GLOBALS.filter((name) => !ON_FIRST_USE.has(name)).map((name) => [name, globalThis[name]]),
);

function defineOnFirstUse(globals) {
  for (const name of ON_FIRST_USE) {
    Object.defineProperty(globals, name, {
      configurable: true,
      enumerable: false,
      get() {
        const value = globalThis[name];
        harden(value);
        Object.defineProperty(globals, name, { value, writable: true, configurable: true });
        return value;
      },
      set(value) {
        Object.defineProperty(globals, name, { value, writable: true, configurable: true });
      },
    });
  }
}

// Escaping the vm context through a host object's `.constructor.constructor` would reach this realm's
// Function, and with it `process`. The host realm never builds functions from strings, so those
// constructors are cut off here, after everything the sandbox needs has been set up.
function sealHostRealm() {
  const constructors = [
    Function,
    Object.getPrototypeOf(async function () {}).constructor,
    Object.getPrototypeOf(function* () {}).constructor,
    Object.getPrototypeOf(async function* () {}).constructor,
  ];
  const refuse = function () {
    throw new EvalError('code generation from strings is not available outside the function sandbox');
  };
  for (const ctor of constructors) {
    Object.defineProperty(ctor.prototype, 'constructor', { value: refuse, writable: false, configurable: false });
  }
}

// `folder` holds the workspace's node_modules/ (null: no packages); config.sharedModules the shared ones.
export function loadWorkspace(script, config, folder) {
  const globals = { ...HOST_VALUES };
  defineOnFirstUse(globals);
  globals.console = makeConsole();
  const context = vm.createContext(globals, { name: 'workspace', codeGeneration: { strings: true, wasm: false } });
  const inside = vm.runInContext(
    // `functions` has no prototype: a function named `constructor` or `__proto__` is just a name.
    'globalThis.global = globalThis; globalThis.functions = Object.create(null); globalThis.cache = {};' +
      '({ Error, Promise, parse: JSON.parse, functions: globalThis.functions })',
    context,
  );
  const timers = makeTimers(inside.Promise); // cleared when their run answers (runs.mjs)
  Object.assign(globals, timers);
  context.require = makeRequire({ context, config, folder, ContextError: inside.Error, parse: inside.parse });
  explainRefusals(config.egress, config.builtins);
  sealHostRealm();
  // Every host global is frozen, not only the ones handed in: their prototypes are shared with Node's own
  // objects (EventEmitter.prototype is in the chain of `process`).
  const hostGlobals = Reflect.ownKeys(globalThis)
    .filter((key) => !['process', 'global', 'globalThis'].includes(key))
    .flatMap((key) => {
      const described = Reflect.getOwnPropertyDescriptor(globalThis, key);
      return [described.value, described.get, described.set];
    });
  // The console object itself stays the workspace's to change; its methods are host functions.
  const handedIn = [
    ...Object.values(globals.console), context.require, ...Object.values(HOST_VALUES), ...Object.values(timers),
  ];
  hardenRealm([EventEmitter, ...handedIn, ...hostGlobals]);
  // Only now the workspace's script: a function body can close its wrapper early (`}, code(), function () {`
  // compiles both alone and in the script), so user code may already run here, and must meet a sealed realm.
  const importModuleDynamically = dynamicImporter(context.require); // the functions' own import()
  const lines = new vm.Script(script, { filename: 'index.js', importModuleDynamically }).runInContext(context);
  bindGlobals(context, Object.keys(lines)); // the functions' own names are `var`s of the script
  return {
    functions: inside.functions,
    lines,
    startRun: () => startRun(new RunLogs(config.logLimits)),
    endRun,
    // Parameters are parsed inside the context, so user code only ever holds objects of its own realm.
    call: (run, fn, paramsJson) => inRun(run, () => fn(inside.parse(paramsJson))),
    format: (value) => util.format('%s', value),
    reportStray: (kind, err) => current()?.logs.add('error', `${kind}: ${util.inspect(err)}`),
  };
}
