// Where a package's require() or import leads, as Node resolves it (node_modules lookup, package.json
// `exports` and `imports` with the `require` or `import` conditions, `main`, `"type"`, .mjs/.cjs), but
// never out of the workspace's node_modules/ and the shared modules folder.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { isBuiltin } from 'node:module';

const EXTENSIONS = ['', '.js', '.json', '.cjs', '.mjs'];
const REQUIRE = new Set(['require', 'module-sync', 'node', 'default']);
const IMPORT = new Set(['import', 'module-sync', 'node', 'default']);

export const isBare = (id) => !/^(\.{1,2}(\/|$)|\/|#|file:)/.test(id);
export const packageName = (id) => id.split('/').slice(0, id.startsWith('@') ? 2 : 1).join('/');
const within = (dir, file) => file === dir || file.startsWith(dir + path.sep);
const isFile = (file) => fs.statSync(file, { throwIfNoEntry: false })?.isFile() ?? false;
const isDirectory = (file) => fs.statSync(file, { throwIfNoEntry: false })?.isDirectory() ?? false;

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

// The resolver of one workspace: `folder` its own folder (packages in node_modules/, may be null), and
// `config.sharedModules` the shared modules folder. `fail(message)` makes the context's own error.
export function makeResolver({ config, folder, fail }) {
  const places = [
    folder && { dir: path.join(folder, 'node_modules'), label: '', own: true },
    config.sharedModules && { dir: path.join(config.sharedModules, 'node_modules'), label: 'shared/', own: false },
  ].filter(Boolean);
  const manifests = new Map(); // package.json path -> parsed, or null
  const realPaths = new Map(); // resolved path -> real path
  const resolutions = new Map(); // verb, folder, specifier -> what resolveFrom found (null: nothing)
  let roots = null;

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

  // How a file loads: 'json', 'module' (ES) or 'commonjs', by its extension and its package's "type".
  function kindOf(file) {
    if (file.endsWith('.json')) return 'json';
    if (file.endsWith('.mjs')) return 'module';
    if (file.endsWith('.js')) return packageScope(file)?.manifest.type === 'module' ? 'module' : 'commonjs';
    return 'commonjs';
  }

  return { places, rootOf, display, resolvePackage, resolveFrom, inside, kindOf };
}
