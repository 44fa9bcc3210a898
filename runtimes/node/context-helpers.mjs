// Helpers made inside a workspace's vm context: CommonJS module objects and the packages' `process`.
import vm from 'node:vm';

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

export const contextHelpers = (context) => vm.runInContext(IN_CONTEXT, context);
