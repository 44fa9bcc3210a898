// require() and import() inside a workspace's vm context: Node builtins from NODE_BUILTIN_MODULES, and
// packages (CommonJS or ES modules) from the workspace's node_modules/ or the shared modules folder, whose
// code runs in the same context. Every package's own require() and import go through here too, so the
// builtin list binds packages as well as functions. The parts, each in its own module:
//   package-resolution.mjs  where a specifier leads, as Node resolves it, never out of those two folders
//   builtins.mjs            the builtins the list allows, the tracked timers and the stand-in `process`
//   builtin-stand-ins.mjs   why a builtin is walled, and the inert stand-ins packages get instead
//   commonjs-loader.mjs     CommonJS and JSON files (vm.compileFunction) and their require()
//   esm-loader.mjs          ES modules (vm.SourceTextModule), by require() or import()
//   context-helpers.mjs     module objects and the packages' `process`, made inside the context
// This module ties them together for one workspace and holds the functions' own require() and import().
import { isBuiltin } from 'node:module';
import { vmModules } from './vm-modules.mjs';
import { contextHelpers } from './context-helpers.mjs';
import { isBare, makeResolver, packageName } from './package-resolution.mjs';
import { makeBuiltins } from './builtins.mjs';
import { makeCommonJsLoader } from './commonjs-loader.mjs';
import { makeEsmLoader } from './esm-loader.mjs';

export function makeRequire({ context, config, folder, ContextError, parse }) {
  const deny = new Set(config.packages?.deny ?? []);
  const allow = config.packages?.allow ? new Set(config.packages.allow) : null;
  const helpers = contextHelpers(context);
  const records = new Map(); // real path -> { file, owner, kind, module, esm, synthetic }: one per worker
  const resolved = new Map(); // what the functions required by name -> exports, as they ask on every run
  const imported = new Map(); // what the functions imported by name -> module
  const fail = (message) => new ContextError(message);
  // Errors made by Node's vm (a host realm object) become the context's own; the package's are its own.
  const own = (err) => (err instanceof ContextError ? err : fail(String(err?.message ?? err)));

  const resolver = makeResolver({ config, folder, fail });
  const { places, rootOf, resolvePackage, inside, kindOf } = resolver;
  const builtins = makeBuiltins({ context, config, helpers, display: resolver.display, fail });
  const { builtin } = builtins;

  function recordOf(file, owner) {
    let record = records.get(file);
    if (!record) {
      record = { file, owner, kind: kindOf(file), module: null, esm: null, synthetic: null };
      records.set(file, record);
    }
    return record;
  }

  // Each loader calls the other: require() of an ES module, import of a CommonJS file.
  const shared = { context, helpers, resolver, builtins, recordOf, fail };
  const esm = makeEsmLoader({ ...shared, own, loadCommonJs: (record) => commonJs.loadCommonJs(record) });
  const commonJs = makeCommonJsLoader({ ...shared, parse, esm });
  const { builtinModule, moduleOfRecord, importModule } = esm;
  const { requireRecord } = commonJs;

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
