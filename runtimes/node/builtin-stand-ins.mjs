// Walled builtins: why each is walled, and the inert stand-ins packages get in their place.
import { createRequire } from 'node:module';
import { harden } from './harden.mjs';

const hostRequire = createRequire(import.meta.url);

// Builtins that would open a wall of the sandbox: a refusal says why, and never advises allowing them.
export const WALLS = {
  fs: "it reads the host's files, other workspaces' among them",
  child_process: 'it starts processes',
  cluster: 'it starts processes',
  worker_threads: "it starts threads that run outside the sandbox, with the host's own process",
  vm: 'it runs code outside the sandbox',
  repl: 'it runs code outside the sandbox',
  module: "it loads modules with the host's own require, around these rules",
  v8: "it reaches the host runtime's internals",
  inspector: "it reaches the host runtime's internals",
  trace_events: "it reaches the host runtime's internals",
  async_hooks: "it reaches other runs' and the host's own resources",
  wasi: "it hands WebAssembly the host's files",
  os: 'it describes the host machine (its name, users and network addresses)',
  tty: "it reaches the host's terminal and file descriptors",
  sqlite: "it opens the host's files",
  test: "it runs tests with the host's own process",
};

// Packages often load a builtin the list refuses only to touch it on paths a function rarely takes:
// form-data's `fs.stat` of file streams, ejs's and postcss's file reads, supports-color's `tty.isatty`,
// node-fetch's `net.isIP`, undici's sockets under cheerio. A package (never the function's own code, which
// gets the refusal) gets an inert stand-in: it loads, and a call that would need the real module throws
// saying why. Nothing of the host is reached through one.
const netReal = hostRequire('node:net');
function unavailable(base, name) {
  return function () {
    const why = ['net', 'tls', 'http2'].includes(base)
      ? "its sockets adopt the host's own descriptors; use http, https or fetch"
      : WALLS[base];
    const error = new Error(`${base}.${name}() is not available to functions: ${why}`);
    error.code = 'ERR_FUNCTIONS_UNAVAILABLE';
    throw error;
  };
}
function inert(base, names, extra = {}) {
  const exports = Object.fromEntries(names.map((name) => [name, unavailable(base, name)]));
  return Object.assign(exports, extra);
}
const FS_CALLS = (
  'access accessSync appendFile appendFileSync chmod chmodSync close closeSync copyFile copyFileSync cp cpSync ' +
  'createReadStream createWriteStream fstat fstatSync lstat lstatSync mkdir mkdirSync mkdtemp mkdtempSync open ' +
  'openSync opendir opendirSync read readFile readFileSync readSync readdir readdirSync readlink readlinkSync ' +
  'realpath realpathSync rename renameSync rm rmSync rmdir rmdirSync stat statSync symlink symlinkSync unlink ' +
  'unlinkSync watch watchFile write writeFile writeFileSync writeSync'
).split(' ');
const STAND_INS = {
  fs: () => {
    const fs = inert('fs', FS_CALLS, {
      existsSync: () => false,
      exists: (file, callback) => callback?.(false),
      constants: { ...fs_constants() },
      ReadStream: class ReadStream {},
      WriteStream: class WriteStream {},
      Stats: class Stats {},
    });
    fs.promises = inert('fs', FS_CALLS.filter((name) => !/Sync$|^create|^watch/.test(name)));
    return fs;
  },
  os: () =>
    inert('os', ['userInfo'], {
      EOL: '\n', devNull: '/dev/null', platform: () => 'linux', type: () => 'Linux', arch: () => process.arch,
      machine: () => process.arch, release: () => '', version: () => '', hostname: () => 'functions',
      homedir: () => '/', tmpdir: () => '/tmp', endianness: () => 'LE', uptime: () => 0, loadavg: () => [0, 0, 0],
      totalmem: () => 0, freemem: () => 0, availableParallelism: () => 1, cpus: () => [], networkInterfaces: () => ({}),
      constants: { signals: {}, errno: {}, priority: {} },
    }),
  tty: () => inert('tty', [], {
    isatty: () => false,
    ReadStream: class ReadStream { constructor() { unavailable('tty', 'ReadStream')(); } },
    WriteStream: class WriteStream { constructor() { unavailable('tty', 'WriteStream')(); } },
  }),
  net: () => inert('net', ['connect', 'createConnection', 'createServer'], {
    isIP: netReal.isIP, isIPv4: netReal.isIPv4, isIPv6: netReal.isIPv6,
    Socket: class Socket { constructor() { unavailable('net', 'Socket')(); } },
    Server: class Server { constructor() { unavailable('net', 'Server')(); } },
  }),
  tls: () => {
    const tls = hostRequire('node:tls');
    return inert('tls', ['connect', 'createServer', 'createSecureContext'], {
      rootCertificates: tls.rootCertificates, DEFAULT_MIN_VERSION: tls.DEFAULT_MIN_VERSION,
      DEFAULT_MAX_VERSION: tls.DEFAULT_MAX_VERSION, DEFAULT_ECDH_CURVE: tls.DEFAULT_ECDH_CURVE,
      getCiphers: tls.getCiphers, checkServerIdentity: tls.checkServerIdentity,
      TLSSocket: class TLSSocket { constructor() { unavailable('tls', 'TLSSocket')(); } },
    });
  },
  http2: () => {
    const http2 = hostRequire('node:http2');
    const classes = (
      'Http2ServerRequest Http2ServerResponse Http2Session ClientHttp2Session ServerHttp2Session Http2Stream ' +
      'ClientHttp2Stream ServerHttp2Stream'
    ).split(' ');
    const stubs = Object.fromEntries(
      classes.map((name) => [name, { [name]: class { constructor() { unavailable('http2', name)(); } } }[name]]),
    );
    return inert('http2', ['connect', 'createServer', 'createSecureServer'], {
      constants: http2.constants, sensitiveHeaders: http2.sensitiveHeaders, ...stubs,
    });
  },
  // undici times its requests: the worker's `performance` (the functions' global one), observers inert.
  perf_hooks: () => {
    const perfHooks = hostRequire('node:perf_hooks');
    return inert('perf_hooks', ['monitorEventLoopDelay', 'createHistogram'], {
      performance: perfHooks.performance, constants: perfHooks.constants,
      PerformanceObserver: class PerformanceObserver {
        static supportedEntryTypes = [];
        observe() {}
        disconnect() {}
      },
    });
  },
  // undici looks for markAsUncloneable; a package gets no thread, port or the host's own workerData.
  worker_threads: () =>
    inert('worker_threads', ['receiveMessageOnPort', 'moveMessagePortToContext', 'getEnvironmentData'], {
      isMainThread: false, threadId: 0, parentPort: null, workerData: null, resourceLimits: {},
      markAsUncloneable() {}, markAsUntransferable() {}, setEnvironmentData() {},
      Worker: class Worker { constructor() { unavailable('worker_threads', 'Worker')(); } },
    }),
  // Node's global console writes to the host's stdout, the service's channel: only the class, inert.
  console: () =>
    inert('console', [], { Console: class Console { constructor() { unavailable('console', 'Console')(); } } }),
  // undici's request handlers extend AsyncResource: here it is a plain class that tracks nothing.
  async_hooks: () =>
    inert('async_hooks', ['createHook', 'executionAsyncResource'], {
      executionAsyncId: () => 0, triggerAsyncId: () => 0,
      AsyncResource: class AsyncResource {
        static bind(fn) { return fn; }
        constructor(type) { this.type = type; }
        runInAsyncScope(fn, thisArg, ...args) { return Reflect.apply(fn, thisArg, args); }
        bind(fn) { return fn; }
        emitDestroy() { return this; }
        asyncId() { return 0; }
        triggerAsyncId() { return 0; }
      },
      AsyncLocalStorage: class AsyncLocalStorage {
        constructor() { unavailable('async_hooks', 'AsyncLocalStorage')(); }
      },
    }),
  // undici publishes its requests on diagnostics channels; a package's own channels are inert here.
  diagnostics_channel: () => {
    const channel = (name) => ({
      name, hasSubscribers: false, publish() {}, subscribe() {}, unsubscribe: () => false,
      bindStore() {}, unbindStore: () => false, runStores: (data, fn, thisArg, ...args) => Reflect.apply(fn, thisArg, args),
    });
    const tracing = (name) => ({
      start: channel(`tracing:${name}:start`), end: channel(`tracing:${name}:end`),
      asyncStart: channel(`tracing:${name}:asyncStart`), asyncEnd: channel(`tracing:${name}:asyncEnd`),
      error: channel(`tracing:${name}:error`), hasSubscribers: false, subscribe() {}, unsubscribe: () => false,
      traceSync: (fn, context, thisArg, ...args) => Reflect.apply(fn, thisArg, args),
      tracePromise: (fn, context, thisArg, ...args) => Reflect.apply(fn, thisArg, args),
      traceCallback: (fn, position, context, thisArg, ...args) => Reflect.apply(fn, thisArg, args),
    });
    return {
      channel, tracingChannel: tracing, hasSubscribers: () => false, subscribe() {}, unsubscribe: () => false,
      Channel: class Channel {},
    };
  },
};
function fs_constants() {
  return hostRequire('node:fs').constants; // numbers only
}
const standIns = new Map(); // base -> its stand-in, made on first use

// The stand-in a package gets for the walled builtin `bare` (`base` its first segment), or null: none.
export function standInFor(base, bare) {
  if (!Object.hasOwn(STAND_INS, base) || (bare !== base && bare !== 'fs/promises')) return null;
  if (!standIns.has(base)) {
    const standIn = STAND_INS[base]();
    harden(standIn);
    standIns.set(base, standIn);
  }
  return bare === 'fs/promises' ? standIns.get(base).promises : standIns.get(base);
}
