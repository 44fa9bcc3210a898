// Which run of a workspace's worker the code running now belongs to, and the timers each run leaves.
//
// A run alone in its worker (the usual case) is simply `alone`: AsyncLocalStorage costs user code 2-3x
// on every promise and `await` in Node 20 (its promise hooks), so it is used only while runs overlap, for
// the runs started then. Code of the run that started alone finds no store, and is that run's. Code a run
// leaves behind that is not a timer (a callback still waiting on I/O) can run after its answer: it counts
// as its own closed run (its logs go nowhere, its timers never fire) or, if it has no store, as the run
// alone in the worker at that moment, if any (SECURITY.md, what still gets through).
import util from 'node:util';
import { AsyncLocalStorage } from 'node:async_hooks';

const currentRun = new AsyncLocalStorage();
const inFlight = new Set();
let alone = null;

export const current = () => currentRun.getStore() ?? alone;

// `logs` collects the run's console output (sandbox.mjs's RunLogs).
export function startRun(logs) {
  const run = { logs, timers: new Map(), closed: false }; // timers: each pending one -> how to clear it
  if (inFlight.size === 0) alone = run;
  inFlight.add(run);
  return run;
}

// `fn` runs as `run`'s code, and so does every callback it leaves.
export const inRun = (run, fn) => (run === alone ? fn() : currentRun.run(run, fn));

// When a run answers, succeeded or failed, the timers, intervals and immediates it left are cleared: none
// of its code runs after its answer, outside its timeout.
export function endRun(run) {
  if (run.closed) return;
  run.closed = true;
  for (const [timer, stop] of run.timers) stop(timer);
  run.timers.clear();
  inFlight.delete(run);
  if (alone === run) alone = null;
  if (inFlight.size === 0) currentRun.disable(); // its promise hooks go, until runs overlap again
}

const NO_RUN = { closed: true, timers: new Map() };
const host = { setTimeout, clearTimeout, setInterval, clearInterval, setImmediate, clearImmediate };

// The timer functions the workspace gets: Node's, each timer noted in its run. A timer that escapes its
// run's list (re-armed by `refresh()` after it fired, or cleared by number) meets the `closed` check when
// it fires, and calls nothing; so do timers set by code that runs outside any run.
export function makeTimers(ContextPromise) {
  const owners = new WeakMap(); // timer -> its run
  function schedule(start, stop, repeats, callback, args) {
    if (typeof callback !== 'function') return start(callback, ...args); // Node's own error
    const run = current() ?? NO_RUN;
    const timer = start(function (...passed) {
      if (run.closed) return stop(this);
      if (!repeats) run.timers.delete(timer);
      return Reflect.apply(callback, this, passed);
    }, ...args);
    if (run.closed) stop(timer);
    else run.timers.set(timer, stop);
    owners.set(timer, run);
    return timer;
  }
  const unschedule = (stop, timer) => {
    if (timer !== null && typeof timer === 'object') owners.get(timer)?.timers.delete(timer);
    return stop(timer);
  };
  const timers = {
    setTimeout: (callback, ...args) => schedule(host.setTimeout, host.clearTimeout, false, callback, args),
    setInterval: (callback, ...args) => schedule(host.setInterval, host.clearInterval, true, callback, args),
    setImmediate: (callback, ...args) => schedule(host.setImmediate, host.clearImmediate, false, callback, args),
    clearTimeout: (timer) => unschedule(host.clearTimeout, timer),
    clearInterval: (timer) => unschedule(host.clearInterval, timer),
    clearImmediate: (timer) => unschedule(host.clearImmediate, timer),
  };
  // util.promisify(setTimeout) and util.promisify(setImmediate) as in Node (timers/promises), tracked the
  // same way and settled in the workspace's own realm.
  const settle = (arm, disarm, value, options) =>
    new ContextPromise((resolve, reject) => {
      const signal = options?.signal;
      if (signal?.aborted) return reject(signal.reason);
      const onAbort = () => {
        disarm(timer);
        reject(signal.reason);
      };
      const timer = arm(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve(value);
      });
      signal?.addEventListener('abort', onAbort, { once: true });
    });
  const custom = {
    setTimeout: (delay, value, options) =>
      settle((done) => timers.setTimeout(done, delay), timers.clearTimeout, value, options),
    setImmediate: (value, options) => settle((done) => timers.setImmediate(done), timers.clearImmediate, value, options),
  };
  for (const [name, fn] of Object.entries(timers)) {
    Object.defineProperty(fn, 'name', { value: name });
    // A getter, as Node's own: promisify() marks the function it returns, so that one is not frozen.
    const get = () => custom[name];
    if (custom[name]) Object.defineProperty(fn, util.promisify.custom, { get, enumerable: true });
  }
  return timers;
}
