// Linking vm modules synchronously, for require() of an ES module (Node 22's require(esm) semantics).
//
// vm.SourceTextModule (behind --experimental-vm-modules) is V8's own module implementation: exact ES
// module semantics (live bindings, cycles, hoisting, top-level await) inside the workspace's context. Its
// public `link(linker)` is async on Node < 24.8, though no step of it waits for anything but our own
// resolver; require() cannot wait. Node 24.8 made the steps public and synchronous (`moduleRequests`,
// `linkRequests(modules)`, `instantiate()`, `hasAsyncGraph()`). Earlier Nodes with require(esm) have the
// same steps on the module's internal ModuleWrap, which their own require(esm) uses: `getModuleRequests()`,
// `link(specifiers, wraps)` (Node 20.20, checked) or `link(wraps)` (later), `instantiate()`, `isGraphAsync()`.
// Which shape the running Node has is found once, by linking and evaluating a small graph; where none
// works, require() of an ES module says so and `await import()` (the public async link) still loads it.
import vm from 'node:vm';

let kWrap = null;
const wrapOf = (module) => {
  kWrap ??= Object.getOwnPropertySymbols(module).find((symbol) => symbol.description === 'kWrap') ?? null;
  return kWrap && module[kWrap];
};

const PUBLIC = {
  name: 'public',
  specifiers: (module) => module.moduleRequests.map((request) => request.specifier),
  link: (module, modules) => module.linkRequests(modules),
  instantiate: (module) => module.instantiate(),
  isAsync: (module) => module.hasAsyncGraph(),
};

const internal = (name, link) => ({
  name,
  specifiers: (module) => wrapOf(module).getModuleRequests().map((request) => request.specifier),
  link: (module, modules, specifiers) => link(wrapOf(module), modules.map(wrapOf), specifiers),
  instantiate: (module) => wrapOf(module).instantiate(),
  isAsync: (module) => {
    const wrap = wrapOf(module);
    return typeof wrap.isGraphAsync === 'function' ? wrap.isGraphAsync() : null;
  },
});

const SHAPES = [
  PUBLIC,
  internal('internal (specifiers, modules)', (wrap, wraps, specifiers) => wrap.link(specifiers, wraps)),
  internal('internal (modules)', (wrap, wraps) => wrap.link(wraps)),
];

// Whether `shape` links, instantiates and evaluates a small graph synchronously here, and tells a graph with
// top-level await from one without (before evaluation: a module waiting on an await already reads as
// 'evaluated', its bindings still uninitialized). The probe's modules are made in the workspace's context
// (a context costs milliseconds) and are never reachable from it.
function works(shape, context) {
  const make = (source) => new vm.SourceTextModule(source, { context, identifier: 'functions:probe' });
  const dep = make('export let x = 1; export function bump() { x += 1; }');
  const root = make('import { x, bump } from "dep"; bump(); export const y = x;');
  const waits = make('await 0; export const z = 1;');
  const specifiers = shape.specifiers(root);
  if (specifiers.length !== 1 || specifiers[0] !== 'dep' || shape.specifiers(dep).length !== 0) return false;
  shape.link(dep, [], []);
  shape.link(root, [dep], specifiers);
  shape.link(waits, [], []);
  shape.instantiate(root);
  shape.instantiate(waits);
  if (shape.isAsync(root) !== false || shape.isAsync(waits) !== true) return false;
  root.evaluate().catch(() => {});
  return root.status === 'evaluated' && root.namespace.y === 2;
}

let found;

// The synchronous linker of this Node, or null (no vm modules, or no shape that works).
export function syncLinker(context) {
  if (found !== undefined) return found;
  found = null;
  if (typeof vm.SourceTextModule !== 'function') return found;
  for (const shape of SHAPES) {
    try {
      if (works(shape, context)) {
        found = shape;
        break;
      }
    } catch {}
  }
  return found;
}

export const vmModules = () => typeof vm.SourceTextModule === 'function';
