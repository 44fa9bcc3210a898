// require() and import() inside a workspace's vm context: Node builtins from NODE_BUILTIN_MODULES, and
// packages (CommonJS or ES modules) from the workspace's node_modules/ or the shared modules folder, whose
// code runs in the same context. Every package's own require() and import go through here too, so the
// builtin list binds packages as well as functions. Resolution follows Node's (node_modules lookup,
// package.json `exports` and `imports` with the `require` or `import` conditions, `main`, `"type"`,
// .mjs/.cjs) but never leaves those two folders.
//
// CommonJS files are compiled as functions in the context (vm.compileFunction). ES modules are V8's own
// modules in the context (vm.SourceTextModule, --experimental-vm-modules): exact module semantics, one
// instance per file whether it was reached by require() or import(). require() of an ES module links and
// evaluates its graph synchronously (vm-modules.mjs), as Node 22's require(esm) does, and refuses a graph
// with top-level await; import() links the same way and waits for the evaluation. A CommonJS file or a
// builtin imported from an ES module becomes a synthetic module: `default` is module.exports, and its own
// enumerable keys are named exports (the CommonJS file runs when the graph importing it is linked).
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import util from 'node:util';
import { pathToFileURL, fileURLToPath } from 'node:url';
import { createRequire, isBuiltin } from 'node:module';
import { harden } from './harden.mjs';
import { syncLinker, vmModules } from './vm-modules.mjs';

const hostRequire = createRequire(import.meta.url);
const WRAPPER = ['exports', 'require', 'module', '__filename', '__dirname', 'process'];
const EXTENSIONS = ['', '.js', '.json', '.cjs', '.mjs'];
const REQUIRE = new Set(['require', 'module-sync', 'node', 'default']);
const IMPORT = new Set(['import', 'module-sync', 'node', 'default']);
// An ES module that reads `process` gets the stand-in through an import put before its first line (on
// that line, so line numbers hold); a module that declares `process` itself is compiled without it.
const PROCESS_PROLOGUE = 'import process from "node:process";';
// What V8 says of module syntax in a script: such a .js file without "type" is an ES module (as Node 22's
// syntax detection decides).
const MODULE_SYNTAX = /Cannot use import statement outside a module|Unexpected token 'export'|Cannot use 'import\.meta' outside a module|await is only valid in async functions and the top level bodies of modules/;

// Builtins that would open a wall of the sandbox: a refusal says why, and never advises allowing them.
const WALLS = {
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
const standIns = new Map();

// Built inside the context, so package code only holds objects of its own realm. Packages often read
// process.env.NODE_ENV or call process.nextTick; the real `process` stays out of reach. stdout and stderr
// write to the run's logs through the console's channel (`debug` and friends write to process.stderr).
const IN_CONTEXT = `({
  SyntaxError,
  newModule: (filename) => ({ id: filename, filename, loaded: false, exports: {}, children: [], paths: [] }),
  makeProcess: (version, versions, platform, arch, printOut, printErr) => {
    const noop = function () { return this; };
    const decoder = new TextDecoder();
    const stream = (fd, print) => ({
      fd, isTTY: false, writable: true,
      write(chunk, encoding, callback) {
        const text = typeof chunk === 'string' ? chunk : ArrayBuffer.isView(chunk) ? decoder.decode(chunk) : String(chunk);
        print('%s', text.endsWith('\\n') ? text.slice(0, -1) : text);
        const done = typeof encoding === 'function' ? encoding : callback;
        if (typeof done === 'function') queueMicrotask(() => done(null));
        return true;
      },
      end(chunk, encoding, callback) {
        if (chunk !== undefined && typeof chunk !== 'function') this.write(chunk, encoding, callback);
        return this;
      },
      cork() {}, uncork() {},
      on: noop, once: noop, off: noop, addListener: noop, removeListener: noop, emit: () => false,
    });
    return {
      env: { NODE_ENV: 'production' }, version, versions, platform, arch, argv: [], execArgv: [], pid: 0,
      title: 'functions', browser: false, release: { name: 'node' },
      stdout: stream(1, printOut), stderr: stream(2, printErr),
      nextTick: (fn, ...args) => queueMicrotask(() => fn(...args)), cwd: () => '/', emitWarning: () => {},
      on: noop, once: noop, off: noop, addListener: noop, removeListener: noop, emit: () => false,
      hrtime: Object.assign((previous) => {
        const ns = BigInt(Math.round(performance.now() * 1e6));
        const now = [Number(ns / 1000000000n), Number(ns % 1000000000n)];
        if (!previous) return now;
        const diff = (now[0] - previous[0]) * 1e9 + now[1] - previous[1];
        return [Math.floor(diff / 1e9), diff % 1e9];
      }, { bigint: () => BigInt(Math.round(performance.now() * 1e6)) }),
    };
  },
})`;

const isBare = (id) => !/^(\.{1,2}(\/|$)|\/|#|file:)/.test(id);
const packageName = (id) => id.split('/').slice(0, id.startsWith('@') ? 2 : 1).join('/');
const within = (dir, file) => file === dir || file.startsWith(dir + path.sep);
const isFile = (file) => fs.statSync(file, { throwIfNoEntry: false })?.isFile() ?? false;
const isDirectory = (file) => fs.statSync(file, { throwIfNoEntry: false })?.isDirectory() ?? false;
const isObject = (value) => (typeof value === 'object' && value !== null) || typeof value === 'function';

// The first target a condition of `conditions` gives, in the package's own order.
function conditionTarget(target, conditions) {
  if (typeof target === 'string') return target;
  if (Array.isArray(target)) {
    for (const item of target) {
      const found = conditionTarget(item, conditions);
      if (found) return found;
    }
    return null;
  }
  if (target && typeof target === 'object') {
    for (const [key, value] of Object.entries(target)) {
      if (conditions.has(key)) {
        const found = conditionTarget(value, conditions);
        if (found) return found;
      }
    }
  }
  return null;
}

// `exports` or `imports` keyed by subpath (`.`, `./x`, `./x/*`, `#x`, `#x/*`): the exact key, else the
// pattern with the longest prefix.
function mappedTarget(map, key, conditions) {
  if (Object.hasOwn(map, key)) return conditionTarget(map[key], conditions);
  let best = null;
  for (const [pattern, value] of Object.entries(map)) {
    const star = pattern.indexOf('*');
    if (star < 0) continue;
    const [before, after] = [pattern.slice(0, star), pattern.slice(star + 1)];
    if (key.startsWith(before) && key.endsWith(after) && key.length >= pattern.length - 1) {
      if (!best || before.length > best.before.length) best = { before, after, value };
    }
  }
  if (!best) return null;
  const target = conditionTarget(best.value, conditions);
  return target && target.replaceAll('*', key.slice(best.before.length, key.length - best.after.length));
}

function exportsTarget(exports, subpath, conditions) {
  const keyed = exports && typeof exports === 'object' && !Array.isArray(exports);
  if (!keyed || !Object.keys(exports).some((key) => key.startsWith('.'))) {
    return subpath === '.' ? conditionTarget(exports, conditions) : null; // a string, or conditions for "."
  }
  return mappedTarget(exports, subpath, conditions);
}

// EventEmitterAsyncResource hands out an instance of a class no export names, whose chain reaches
// async_hooks' AsyncResource, the base of fetch's (undici's) request handlers: freeze that chain too.
let asyncResourceHardened = false;
function hardenAsyncResource(events) {
  if (asyncResourceHardened) return;
  asyncResourceHardened = true;
  const sample = new events.EventEmitterAsyncResource({ name: 'functions' });
  harden(Reflect.getPrototypeOf(sample.asyncResource), { root: false, prototype: true });
  sample.emitDestroy();
}

export function makeRequire({ context, config, folder, ContextError, parse }) {
  const allowed = new Set(config.builtins);
  const deny = new Set(config.packages?.deny ?? []);
  const allow = config.packages?.allow ? new Set(config.packages.allow) : null;
  const places = [
    folder && { dir: path.join(folder, 'node_modules'), label: '', own: true },
    config.sharedModules && { dir: path.join(config.sharedModules, 'node_modules'), label: 'shared/', own: false },
  ].filter(Boolean);
  const helpers = vm.runInContext(IN_CONTEXT, context);
  // The console's own methods, taken before any user code runs: the stand-in process writes through them.
  const { log: printOut, error: printErr } = context.console;
  const records = new Map(); // real path -> { file, owner, kind, module, esm, synthetic }: one per worker
  const ofModule = new WeakMap(); // vm.SourceTextModule -> its record
  const builtinModules = new Map(); // 'node:x' -> synthetic module
  const linking = new WeakSet(); // modules whose requests are linked (or being linked)
  const manifests = new Map(); // package.json path -> parsed, or null
  const realPaths = new Map(); // resolved path -> real path
  const resolutions = new Map(); // verb, folder, specifier -> what resolveFrom found (null: nothing)
  const resolved = new Map(); // what the functions required by name -> exports, as they ask on every run
  const imported = new Map(); // what the functions imported by name -> module
  let standIn = null; // the packages' process
  let roots = null;
  const fail = (message) => new ContextError(message);
  // Errors made by Node's vm (a host realm object) become the context's own; the package's are its own.
  const own = (err) => (err instanceof ContextError ? err : fail(String(err?.message ?? err)));

  // The real node_modules folders; absent ones are looked for again next time (installed meanwhile).
  function realRoots() {
    if (roots) return roots;
    const found = places.map((place) => {
      try {
        return { ...place, dir: fs.realpathSync(place.dir) };
      } catch {
        return null;
      }
    });
    if (found.every(Boolean)) roots = found;
    return found.filter(Boolean);
  }

  const rootOf = (file) => realRoots().find((root) => within(root.dir, file));
  const display = (file) => {
    const root = rootOf(file);
    return root ? `${root.label}${path.relative(path.dirname(root.dir), file)}` : path.basename(file);
  };

  function readManifest(file) {
    if (!manifests.has(file)) {
      let manifest = null;
      try {
        manifest = JSON.parse(fs.readFileSync(file, 'utf8'));
      } catch {}
      manifests.set(file, manifest);
    }
    return manifests.get(file);
  }

  // The nearest package.json above `file`, inside its root: { dir, manifest } or null.
  function packageScope(file) {
    const root = rootOf(file);
    for (let dir = path.dirname(file); root && within(root.dir, dir) && dir !== root.dir; dir = path.dirname(dir)) {
      const manifest = readManifest(path.join(dir, 'package.json'));
      if (manifest) return { dir, manifest };
    }
    return null;
  }

  function standInProcess() {
    const host = globalThis.process;
    standIn ??= helpers.makeProcess(host.version, { ...host.versions }, host.platform, host.arch, printOut, printErr);
    return standIn;
  }

  // `from`: the package file that asks (null: the functions); `verb`: 'require' or 'import'.
  // `timers` and `timers/promises` are the workspace's own timers (runs.mjs, put in the context before this
  // require is made): they stop when their run answers, as the global ones do. Node's would outlive it.
  let timersModule = null;
  function trackedTimers(bare) {
    if (timersModule === null) {
      const names = ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'setImmediate', 'clearImmediate'];
      const exports = Object.fromEntries(names.map((name) => [name, context[name]]));
      const promisified = (name) => context[name][util.promisify.custom];
      exports.promises = Object.freeze({ setTimeout: promisified('setTimeout'), setImmediate: promisified('setImmediate') });
      timersModule = Object.freeze(exports);
    }
    return bare === 'timers/promises' ? timersModule.promises : timersModule;
  }

  function builtin(id, from, verb) {
    const bare = id.startsWith('node:') ? id.slice(5) : id;
    const base = bare.split('/')[0];
    if (base === 'process') return standInProcess(); // never the host's, whatever the list says
    if (base === 'timers' && (allowed.has(bare) || allowed.has(base))) return trackedTimers(bare);
    if (allowed.has(bare) || allowed.has(base)) {
      const exports = hostRequire(id);
      harden(exports); // a host module's prototypes are shared with Node's own objects (see harden.mjs)
      if (base === 'events') hardenAsyncResource(exports);
      return exports;
    }
    const who = from
      ? `package '${from.owner}' (${display(from.file)}) ${verb}s the Node builtin '${bare}', which`
      : `${verb}('${id}') is refused: the Node builtin '${bare}'`;
    if (from && Object.hasOwn(STAND_INS, base) && (bare === base || bare === 'fs/promises')) {
      if (!standIns.has(base)) {
        const standIn = STAND_INS[base]();
        harden(standIn);
        standIns.set(base, standIn);
      }
      return bare === 'fs/promises' ? standIns.get(base).promises : standIns.get(base);
    }
    const why = WALLS[base];
    if (why) {
      throw fail(`${who} is not in NODE_BUILTIN_MODULES, and functions do not get it: ${why}`);
    }
    const list = [...allowed].join(', ') || 'none';
    throw fail(`${who} is not in NODE_BUILTIN_MODULES (allowed: ${list}); add it there to allow it`);
  }

  function asFile(file) {
    for (const extension of EXTENSIONS) if (isFile(file + extension)) return file + extension;
    if (!isDirectory(file)) return null;
    const main = readManifest(path.join(file, 'package.json'))?.main;
    if (typeof main === 'string') {
      const found = asFile(path.join(file, main));
      if (found) return found;
    }
    for (const index of ['index.js', 'index.json', 'index.cjs', 'index.mjs']) {
      if (isFile(path.join(file, index))) return path.join(file, index);
    }
    return null;
  }

  // node_modules folders to search from a package's file: up its own tree, then the roots (its own first).
  function searchDirs(fromDir) {
    const home = fromDir && rootOf(fromDir);
    const dirs = [];
    for (let dir = fromDir; home && dir !== home.dir && within(home.dir, dir); dir = path.dirname(dir)) {
      if (path.basename(dir) !== 'node_modules') dirs.push(path.join(dir, 'node_modules'));
    }
    const others = realRoots().filter((root) => root !== home);
    return [...dirs, ...(home ? [home] : []).concat(others).map((root) => root.dir)];
  }

  // A package by name, with the conditions of `verb`. require() of a package that exports only an `import`
  // entry loads that entry (an ES module, required synchronously) where Node would refuse.
  function resolvePackage(id, fromDir, verb) {
    const name = packageName(id);
    const subpath = id === name ? '.' : `.${id.slice(name.length)}`;
    for (const dir of searchDirs(fromDir)) {
      const packageDir = path.join(dir, name);
      const manifest = readManifest(path.join(packageDir, 'package.json'));
      if (!manifest && !isDirectory(packageDir)) continue;
      if (manifest?.exports === undefined || manifest.exports === null) {
        return { name, file: asFile(path.join(packageDir, subpath)) };
      }
      const target =
        exportsTarget(manifest.exports, subpath, verb === 'import' ? IMPORT : REQUIRE) ??
        (verb === 'require' ? exportsTarget(manifest.exports, subpath, IMPORT) : null);
      if (!target) throw fail(`${verb}('${id}') failed: package '${name}' exports no entry for '${subpath}'`);
      return { name, file: asFile(path.join(packageDir, target)) };
    }
    return null;
  }

  // `#name` through the `imports` of the package holding `fromFile`.
  function resolveImports(id, fromFile, verb) {
    const scope = packageScope(fromFile);
    const map = scope?.manifest.imports;
    const target = map && typeof map === 'object' ? mappedTarget(map, id, verb === 'import' ? IMPORT : REQUIRE) : null;
    if (!target) return null;
    if (target.startsWith('./')) return { file: asFile(path.join(scope.dir, target)) };
    return isBuiltin(target) ? { builtin: target } : resolvePackage(target, scope.dir, verb);
  }

  // Symbolic links and `..` must not lead out of the packages' folders.
  function inside(file, id) {
    let real = realPaths.get(file);
    if (real === undefined) realPaths.set(file, (real = fs.realpathSync.native(file)));
    if (!rootOf(real)) {
      throw fail(`'${id}' resolves outside the workspace's packages and the shared modules`);
    }
    return real;
  }

  // From a package's file: { file, name } (name: the package, when resolved by name), { builtin }, or null.
  // Remembered per folder, name and verb: a package's files import the same few names over and over.
  function resolveFrom(id, fromFile, verb) {
    const fromDir = path.dirname(fromFile);
    const key = `${verb}\0${fromDir}\0${id}`;
    if (!resolutions.has(key)) resolutions.set(key, resolveAgain(id, fromFile, fromDir, verb));
    return resolutions.get(key);
  }

  function resolveAgain(id, fromFile, fromDir, verb) {
    let found;
    if (id.startsWith('#')) found = resolveImports(id, fromFile, verb);
    else if (id.startsWith('file:')) found = { file: asFile(fileURLToPath(id)) };
    else if (isBare(id)) found = resolvePackage(id, fromDir, verb);
    else found = { file: asFile(path.resolve(fromDir, id)) };
    if (found?.builtin) return found;
    return found?.file ? { file: inside(found.file, id), name: found.name } : null;
  }

  function kindOf(file) {
    if (file.endsWith('.json')) return 'json';
    if (file.endsWith('.mjs')) return 'module';
    if (file.endsWith('.js')) return packageScope(file)?.manifest.type === 'module' ? 'module' : 'commonjs';
    return 'commonjs';
  }

  function recordOf(file, owner) {
    let record = records.get(file);
    if (!record) {
      record = { file, owner, kind: kindOf(file), module: null, esm: null, synthetic: null };
      records.set(file, record);
    }
    return record;
  }

  // -- CommonJS ---------------------------------------------------------------------------------------

  // Run a CommonJS (or JSON) file once; false when it turns out to be an ES module (module syntax).
  function loadCommonJs(record) {
    if (record.module) return true;
    if (record.file.endsWith('.node')) {
      throw fail(`package '${record.owner}' needs a native addon (${display(record.file)}), which functions cannot load`);
    }
    const module = helpers.newModule(record.file);
    record.module = module; // before it runs, so a cycle gets the partial exports, as in Node
    try {
      const text = fs.readFileSync(record.file, 'utf8');
      if (record.kind === 'json') module.exports = parse(text);
      else run(record, module, text.replace(/^\uFEFF?#!.*/, ''));
    } catch (err) {
      record.module = null;
      if (err?.name === 'SyntaxError' && MODULE_SYNTAX.test(err.message) && record.kind === 'commonjs') {
        record.kind = 'module';
        return false;
      }
      throw err;
    }
    module.loaded = true;
    return true;
  }

  function run(record, module, source) {
    const { file, owner } = record;
    const fn = vm.compileFunction(source, WRAPPER, {
      parsingContext: context,
      filename: display(file),
      importModuleDynamically: (specifier) => importFrom(String(specifier), record),
    });
    fn.call(module.exports, module.exports, requireFrom(record), module, file, path.dirname(file), standInProcess());
  }

  // What require() of a package file gives: module.exports, or an ES module's namespace.
  function requireRecord(record) {
    if (record.kind !== 'module' && loadCommonJs(record)) return record.module.exports;
    return requireModule(record);
  }

  // The require of a package's file: relative paths, `#imports` and packages, builtins by the list.
  function requireFrom(record) {
    const require = (name) => {
      const id = String(name);
      if (isBuiltin(id)) return builtin(id, record, 'require');
      const found = resolveFrom(id, record.file, 'require');
      if (found?.builtin) return builtin(found.builtin, record, 'require');
      if (!found) {
        throw fail(`package '${record.owner}' requires '${id}', which is not installed (${display(record.file)})`);
      }
      return requireRecord(recordOf(found.file, found.name ?? record.owner));
    };
    require.resolve = (name) => {
      const found = resolveFrom(String(name), record.file, 'require');
      if (!found?.file) throw fail(`cannot resolve '${name}' from ${display(record.file)}`);
      return found.file;
    };
    return require;
  }

  // -- ES modules -------------------------------------------------------------------------------------

  function needVmModules(record) {
    if (!vmModules()) {
      throw fail(
        `package '${record.owner}' is an ES module (${display(record.file)}), and this Node host was started ` +
          'without --experimental-vm-modules, which ES modules need',
      );
    }
  }

  function sourceModule(record) {
    if (record.esm) return record.esm;
    needVmModules(record);
    let source = fs.readFileSync(record.file, 'utf8').replace(/^\uFEFF/, '');
    if (source.startsWith('#!')) source = `//${source.slice(2)}`;
    const { file } = record;
    const options = {
      context,
      identifier: display(file),
      initializeImportMeta(meta) {
        meta.url = pathToFileURL(file).href;
        meta.filename = file;
        meta.dirname = path.dirname(file);
      },
      importModuleDynamically: (specifier) => importFrom(String(specifier), record),
    };
    let module = null;
    if (/\bprocess\b/.test(source)) {
      try {
        module = new vm.SourceTextModule(PROCESS_PROLOGUE + source, options);
      } catch {} // it declares `process` itself (or does not compile: said below)
    }
    try {
      module ??= new vm.SourceTextModule(source, options);
    } catch (err) {
      if (err?.name !== 'SyntaxError') throw err;
      throw new helpers.SyntaxError(`${err.message} (in ${display(file)}, package '${record.owner}')`);
    }
    record.esm = module;
    ofModule.set(module, record);
    return module;
  }

  // A module whose exports are set from a value: a CommonJS file's module.exports, JSON, a builtin.
  function syntheticModule(value, identifier) {
    const names = ['default', ...(isObject(value) ? Object.keys(value).filter((key) => key !== 'default') : [])];
    return new vm.SyntheticModule(
      names,
      function () {
        this.setExport('default', value);
        for (const name of names.slice(1)) this.setExport(name, value[name]);
      },
      { context, identifier },
    );
  }

  function builtinModule(id, from) {
    const key = `node:${id.replace(/^node:/, '')}`;
    if (!builtinModules.has(key)) builtinModules.set(key, syntheticModule(builtin(id, from, 'import'), key));
    return builtinModules.get(key);
  }

  // The module for an import of a package file: its own, or a synthetic one around what require() gives.
  function moduleOfRecord(record) {
    if (record.kind !== 'module' && loadCommonJs(record)) {
      record.synthetic ??= syntheticModule(record.module.exports, display(record.file));
      return record.synthetic;
    }
    return sourceModule(record);
  }

  // A static import (or re-export) of `specifier` by the module of `record`.
  function dependencyOf(specifier, record) {
    if (isBuiltin(specifier)) return builtinModule(specifier, record);
    const found = resolveFrom(specifier, record.file, 'import');
    if (found?.builtin) return builtinModule(found.builtin, record);
    if (!found) {
      throw fail(`package '${record.owner}' imports '${specifier}', which is not installed (${display(record.file)})`);
    }
    return moduleOfRecord(recordOf(found.file, found.name ?? record.owner));
  }

  // Link `root` and every module it reaches, synchronously, then instantiate the graph. A failure leaves
  // none of the modules it made: the next attempt starts over.
  function linkGraph(root, linker) {
    const visited = [];
    const visit = (module) => {
      if (linking.has(module)) return;
      linking.add(module);
      visited.push(module);
      const specifiers = linker.specifiers(module);
      const modules = specifiers.map((specifier) => dependencyOf(specifier, ofModule.get(module)));
      for (const dependency of modules) {
        if (ofModule.has(dependency) && dependency.status === 'unlinked') visit(dependency);
      }
      linker.link(module, modules, specifiers);
    };
    try {
      visit(root);
      linker.instantiate(root);
    } catch (err) {
      for (const module of visited) {
        linking.delete(module);
        const record = ofModule.get(module);
        if (record?.esm === module) record.esm = null;
      }
      throw own(err);
    }
  }

  const exportsOf = (module) => {
    const namespace = module.namespace;
    return Object.hasOwn(namespace, 'module.exports') ? namespace['module.exports'] : namespace;
  };

  // require() of an ES module: its namespace, once its graph ran to the end synchronously.
  function requireModule(record) {
    const module = sourceModule(record);
    const name = `${display(record.file)} (package '${record.owner}')`;
    if (module.status === 'errored') throw module.error;
    if (module.status === 'evaluating' || (module.status === 'unlinked' && linking.has(module))) {
      throw fail(`require() of the ES module ${name} while it is still loading: a cycle of require() and import`);
    }
    const linker = syncLinker(context);
    if (!linker) {
      throw fail(`${name} is an ES module, which this Node cannot require synchronously: load it with await import()`);
    }
    if (module.status === 'unlinked') linkGraph(module, linker);
    if (!record.settled) {
      // Before evaluating: a graph waiting on an await would read as evaluated, its bindings unset.
      if (linker.isAsync(module)) {
        throw fail(
          `${name} is an ES module that uses top-level await, so require() cannot load it: ` +
            `use \`await import('${record.owner}')\` instead`,
        );
      }
      record.evaluation ??= module.evaluate();
      record.evaluation.catch(() => {}); // its error is module.error, thrown below
      record.settled = true; // no await in the graph: it ran to the end just now
    }
    if (module.status === 'errored') throw module.error;
    return exportsOf(module);
  }

  // import(): link as require() does (or by the public, async link where this Node has no synchronous
  // one), then wait for the evaluation, top-level await included.
  async function importModule(module) {
    if (!ofModule.has(module)) {
      if (module.status === 'unlinked') await module.link(() => Promise.reject(fail('a synthetic module has no imports')));
      if (module.status === 'linked') await module.evaluate();
      return module;
    }
    const record = ofModule.get(module);
    if (module.status === 'unlinked') {
      const linker = syncLinker(context);
      if (linker) linkGraph(module, linker);
      else await module.link((specifier, referrer) => dependencyOf(specifier, ofModule.get(referrer))).catch((err) => {
        throw own(err);
      });
    }
    record.evaluation ??= module.evaluate();
    await record.evaluation;
    record.settled = true; // a graph with top-level await may be required once it has finished
    return module;
  }

  // import() in a package file.
  async function importFrom(specifier, record) {
    needVmModules(record);
    return importModule(dependencyOf(specifier, record));
  }

  // -- the functions' own require() and import() ------------------------------------------------------

  // A package the functions name: the lists apply; by name only, never a file.
  function findPackage(id, verb) {
    if (!isBare(id)) {
      throw fail(`${verb}('${id}') failed: functions ${verb} Node builtins and packages by name, not files`);
    }
    const name = packageName(id);
    if (deny.has(name)) throw fail(`${verb}('${id}') is refused: '${name}' is in NODEJS_PACKAGES_BLACKLIST_IMPORT`);
    const found = places.length ? resolvePackage(id, null, verb) : null;
    if (!found?.file) {
      throw fail(
        `${verb}('${id}') failed: '${id}' is not a Node builtin, and no installed package of this workspace ` +
          'or shared module has that name',
      );
    }
    const file = inside(found.file, id);
    if (allow && !allow.has(name) && rootOf(file).own) {
      throw fail(`${verb}('${id}') is refused: '${name}' is not in NODEJS_PACKAGES_WHITELIST_IMPORT`);
    }
    return recordOf(file, name);
  }

  async function importForFunctions(id) {
    if (!vmModules()) throw fail(`import('${id}') is not available: this Node host runs without --experimental-vm-modules`);
    if (!imported.has(id)) {
      imported.set(id, isBuiltin(id) ? builtinModule(id, null) : moduleOfRecord(findPackage(id, 'import')));
    }
    try {
      return await importModule(imported.get(id));
    } catch (err) {
      imported.delete(id); // a failed link starts over next time (an evaluation error stays the module's)
      throw err;
    }
  }
  dynamicImports.set(require, (specifier) => importForFunctions(String(specifier)));

  // The require of the workspace's functions: builtins and packages by name, no files.
  function require(name) {
    const id = String(name);
    if (isBuiltin(id)) return builtin(id, null, 'require');
    if (!resolved.has(id)) resolved.set(id, requireRecord(findPackage(id, 'require')));
    return resolved.get(id);
  }
  return require;
}

// The functions' require() -> the import() of their script (vm.Script's importModuleDynamically).
const dynamicImports = new WeakMap();
export const dynamicImporter = (require) => dynamicImports.get(require);
