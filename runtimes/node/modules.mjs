// require() inside a workspace's vm context: Node builtins from NODE_BUILTIN_MODULES, and CommonJS packages
// from the workspace's node_modules/ or the shared modules folder, whose code runs in the same context.
// Every package's own require() goes through here too, so the builtin list binds packages as well as
// functions. Resolution follows Node's (node_modules lookup, package.json `exports` with the `require`,
// `node` and `default` conditions, `main`, .js/.json/index.js) but never leaves those two folders.
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { createRequire, isBuiltin } from 'node:module';
import { harden } from './harden.mjs';

const hostRequire = createRequire(import.meta.url);
const WRAPPER = ['exports', 'require', 'module', '__filename', '__dirname', 'process'];
const EXTENSIONS = ['', '.js', '.json', '.cjs'];
// Built inside the context, so package code only holds objects of its own realm. Packages often read
// process.env.NODE_ENV or call process.nextTick; the real `process` stays out of reach.
const IN_CONTEXT = `({
  newModule: (filename) => ({ id: filename, filename, loaded: false, exports: {}, children: [], paths: [] }),
  makeProcess: (version, versions, platform, arch) => {
    const noop = function () { return this; };
    return {
      env: { NODE_ENV: 'production' }, version, versions, platform, arch, argv: [], execArgv: [], pid: 0,
      title: 'functions', browser: false, release: { name: 'node' },
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

const isBare = (id) => !/^(\.{1,2}(\/|$)|\/)/.test(id);
const packageName = (id) => id.split('/').slice(0, id.startsWith('@') ? 2 : 1).join('/');
const within = (dir, file) => file === dir || file.startsWith(dir + path.sep);
const isFile = (file) => fs.statSync(file, { throwIfNoEntry: false })?.isFile() ?? false;
const isDirectory = (file) => fs.statSync(file, { throwIfNoEntry: false })?.isDirectory() ?? false;

// The first target the `require`, `node` or `default` condition gives, in the package's own order.
function conditionTarget(target) {
  if (typeof target === 'string') return target;
  if (Array.isArray(target)) {
    for (const item of target) {
      const found = conditionTarget(item);
      if (found) return found;
    }
    return null;
  }
  if (target && typeof target === 'object') {
    for (const [key, value] of Object.entries(target)) {
      if (key === 'require' || key === 'node' || key === 'default') {
        const found = conditionTarget(value);
        if (found) return found;
      }
    }
  }
  return null;
}

function exportsTarget(exports, subpath) {
  const keyed = exports && typeof exports === 'object' && !Array.isArray(exports);
  if (!keyed || !Object.keys(exports).some((key) => key.startsWith('.'))) {
    return subpath === '.' ? conditionTarget(exports) : null; // a string, or conditions for "." alone
  }
  if (Object.hasOwn(exports, subpath)) return conditionTarget(exports[subpath]);
  for (const [key, value] of Object.entries(exports)) {
    const star = key.indexOf('*');
    if (star < 0) continue;
    const [before, after] = [key.slice(0, star), key.slice(star + 1)];
    if (subpath.startsWith(before) && subpath.endsWith(after) && subpath.length >= key.length - 1) {
      const target = conditionTarget(value);
      return target && target.replaceAll('*', subpath.slice(before.length, subpath.length - after.length));
    }
  }
  return null;
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
  const modules = new Map(); // real path -> module: one instance per worker, as Node's require.cache
  const manifests = new Map(); // package.json path -> parsed, or null
  const resolved = new Map(); // what the functions required by name -> exports, as they ask on every run
  let process = null;
  let roots = null;
  const fail = (message) => new ContextError(message);

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

  function builtin(id, from) {
    const bare = id.startsWith('node:') ? id.slice(5) : id;
    if (allowed.has(bare) || allowed.has(bare.split('/')[0])) {
      const exports = hostRequire(id);
      harden(exports); // a host module's prototypes are shared with Node's own objects (see harden.mjs)
      return exports;
    }
    const list = `NODE_BUILTIN_MODULES (allowed: ${[...allowed].join(', ') || 'none'})`;
    if (!from) throw fail(`require('${id}') is refused: the Node builtin '${bare}' is not in ${list}`);
    throw fail(`package '${from.name}' (${display(from.file)}) requires the Node builtin '${bare}', which is not in ${list}`);
  }

  function asFile(file) {
    for (const extension of EXTENSIONS) if (isFile(file + extension)) return file + extension;
    if (!isDirectory(file)) return null;
    const main = readManifest(path.join(file, 'package.json'))?.main;
    if (typeof main === 'string') {
      const found = asFile(path.join(file, main));
      if (found) return found;
    }
    for (const index of ['index.js', 'index.json', 'index.cjs']) {
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

  function resolvePackage(id, fromDir) {
    const name = packageName(id);
    const subpath = id === name ? '.' : `.${id.slice(name.length)}`;
    for (const dir of searchDirs(fromDir)) {
      const packageDir = path.join(dir, name);
      const manifest = readManifest(path.join(packageDir, 'package.json'));
      if (!manifest && !isDirectory(packageDir)) continue;
      if (manifest?.exports === undefined) return { name, file: asFile(path.join(packageDir, subpath)) };
      const target = exportsTarget(manifest.exports, subpath);
      if (!target) {
        throw fail(
          `require('${id}') failed: package '${name}' exports no CommonJS entry for '${subpath}' ` +
            '(an ES-module-only package cannot be required by functions)',
        );
      }
      return { name, file: asFile(path.join(packageDir, target)) };
    }
    return null;
  }

  // Symbolic links and `..` must not lead out of the packages' folders.
  function inside(file, id) {
    const real = fs.realpathSync(file);
    if (!rootOf(real)) {
      throw fail(`require('${id}') failed: it resolves outside the workspace's packages and the shared modules`);
    }
    return real;
  }

  function isModuleFile(file) {
    if (file.endsWith('.mjs')) return true;
    if (!file.endsWith('.js')) return false;
    for (let dir = path.dirname(file); rootOf(dir) && dir !== rootOf(dir).dir; dir = path.dirname(dir)) {
      const manifest = readManifest(path.join(dir, 'package.json'));
      if (manifest) return manifest.type === 'module';
    }
    return false;
  }

  const notCommonJs = (owner, file) =>
    fail(`package '${owner}' is an ES module (${display(file)}): functions can require only CommonJS packages`);

  function load(file, owner) {
    const cached = modules.get(file);
    if (cached) return cached.exports;
    if (isModuleFile(file)) throw notCommonJs(owner, file);
    const module = helpers.newModule(file);
    modules.set(file, module); // before it runs, so a cycle gets the partial exports, as in Node
    try {
      const text = fs.readFileSync(file, 'utf8');
      if (file.endsWith('.json')) module.exports = parse(text);
      else run(module, text.replace(/^\uFEFF?#!.*/, ''), file, owner);
    } catch (err) {
      modules.delete(file);
      if (err instanceof SyntaxError && /\b(import|export)\b/.test(err.message)) throw notCommonJs(owner, file);
      throw err;
    }
    module.loaded = true;
    return module.exports;
  }

  function run(module, source, file, owner) {
    const fn = vm.compileFunction(source, WRAPPER, { parsingContext: context, filename: display(file) });
    const host = globalThis.process;
    process ??= helpers.makeProcess(host.version, { ...host.versions }, host.platform, host.arch);
    fn.call(module.exports, module.exports, requireFrom(file, owner), module, file, path.dirname(file), process);
  }

  function resolveFrom(id, fromFile) {
    const fromDir = path.dirname(fromFile);
    const found = isBare(id) ? resolvePackage(id, fromDir) : { file: asFile(path.resolve(fromDir, id)) };
    return found?.file ? { file: inside(found.file, id), name: found.name } : null;
  }

  // The require of a package's file: relative paths and packages, builtins by the list.
  function requireFrom(fromFile, owner) {
    const from = { file: fromFile, name: owner };
    const require = (name) => {
      const id = String(name);
      if (isBuiltin(id)) return builtin(id, from);
      const found = resolveFrom(id, fromFile);
      if (!found) throw fail(`package '${owner}' requires '${id}', which is not installed (${display(fromFile)})`);
      return load(found.file, found.name ?? owner);
    };
    require.resolve = (name) => {
      const found = resolveFrom(String(name), fromFile);
      if (!found) throw fail(`cannot resolve '${name}' from ${display(fromFile)}`);
      return found.file;
    };
    return require;
  }

  function requirePackage(id) {
    const name = packageName(id);
    if (deny.has(name)) throw fail(`require('${id}') is refused: '${name}' is in NODEJS_PACKAGES_BLACKLIST_IMPORT`);
    const found = places.length ? resolvePackage(id, null) : null;
    if (!found?.file) {
      throw fail(
        `require('${id}') failed: '${id}' is not a Node builtin, and no installed package of this workspace ` +
          'or shared module has that name',
      );
    }
    const file = inside(found.file, id);
    if (allow && !allow.has(name) && rootOf(file).own) {
      throw fail(`require('${id}') is refused: '${name}' is not in NODEJS_PACKAGES_WHITELIST_IMPORT`);
    }
    return load(file, name);
  }

  // The require of the workspace's functions: builtins and packages by name, no files.
  return function require(name) {
    const id = String(name);
    if (isBuiltin(id)) return builtin(id, null);
    if (!isBare(id)) {
      throw fail(`require('${id}') failed: functions require Node builtins and packages by name, not files`);
    }
    if (!resolved.has(id)) resolved.set(id, requirePackage(id));
    return resolved.get(id);
  };
}
