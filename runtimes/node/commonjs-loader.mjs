// CommonJS (and JSON) files of packages, compiled as functions in the workspace's context
// (vm.compileFunction), each run once, with a require() of their own that goes through the same rules.
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { isBuiltin } from 'node:module';

const WRAPPER = ['exports', 'require', 'module', '__filename', '__dirname', 'process'];
// What V8 says of module syntax in a script: such a .js file without "type" is an ES module (as Node 22's
// syntax detection decides).
const MODULE_SYNTAX = /Cannot use import statement outside a module|Unexpected token 'export'|Cannot use 'import\.meta' outside a module|await is only valid in async functions and the top level bodies of modules/;

// `esm`: the ES module loader's requireModule and importFrom (require() of an ES module, import() in a
// CommonJS file); `recordOf(file, owner)`: the one record of a package file.
export function makeCommonJsLoader({ context, helpers, parse, resolver, builtins, recordOf, esm, fail }) {
  const { display, resolveFrom } = resolver;
  const { builtin, standInProcess } = builtins;

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
    const { file } = record;
    const fn = vm.compileFunction(source, WRAPPER, {
      parsingContext: context,
      filename: display(file),
      importModuleDynamically: (specifier) => esm.importFrom(String(specifier), record),
    });
    fn.call(module.exports, module.exports, requireFrom(record), module, file, path.dirname(file), standInProcess());
  }

  // What require() of a package file gives: module.exports, or an ES module's namespace.
  function requireRecord(record) {
    if (record.kind !== 'module' && loadCommonJs(record)) return record.module.exports;
    return esm.requireModule(record);
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

  return { loadCommonJs, requireRecord };
}
