// The Node builtins a workspace's code gets: those of NODE_BUILTIN_MODULES (hardened), the tracked timers,
// the stand-in `process`, and for packages the inert stand-ins of walled ones; anything else is refused.
import util from 'node:util';
import { createRequire } from 'node:module';
import { harden } from './harden.mjs';
import { WALLS, standInFor } from './builtin-stand-ins.mjs';

const hostRequire = createRequire(import.meta.url);

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

// `display(file)` names a package file in messages; `fail(message)` makes the context's own error.
export function makeBuiltins({ context, config, helpers, display, fail }) {
  const allowed = new Set(config.builtins);
  // The console's own methods, taken before any user code runs: the stand-in process writes through them.
  const { log: printOut, error: printErr } = context.console;
  let standIn = null; // the packages' process

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
    // A package (never the functions' own code) gets an inert stand-in where there is one.
    const inert = from && standInFor(base, bare);
    if (inert) return inert;
    const why = WALLS[base];
    if (why) {
      throw fail(`${who} is not in NODE_BUILTIN_MODULES, and functions do not get it: ${why}`);
    }
    const list = [...allowed].join(', ') || 'none';
    throw fail(`${who} is not in NODE_BUILTIN_MODULES (allowed: ${list}); add it there to allow it`);
  }

  return { builtin, standInProcess };
}
