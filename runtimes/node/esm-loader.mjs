// ES modules of packages: V8's own modules in the workspace's context (vm.SourceTextModule, behind
// --experimental-vm-modules), one instance per file whether reached by require() or import(). require()
// links and evaluates a graph synchronously (vm-modules.mjs), as Node 22's require(esm) does, and refuses
// one with top-level await; import() links the same way and waits for the evaluation. A CommonJS file or a
// builtin imported from an ES module becomes a synthetic module: `default` is module.exports, and its own
// enumerable keys are named exports (the CommonJS file runs when the graph importing it is linked).
import fs from 'node:fs';
import path from 'node:path';
import vm from 'node:vm';
import { pathToFileURL } from 'node:url';
import { isBuiltin } from 'node:module';
import { syncLinker, vmModules } from './vm-modules.mjs';

// An ES module that reads `process` gets the stand-in through an import put before its first line (on
// that line, so line numbers hold); a module that declares `process` itself is compiled without it.
const PROCESS_PROLOGUE = 'import process from "node:process";';
const isObject = (value) => (typeof value === 'object' && value !== null) || typeof value === 'function';

// `loadCommonJs(record)`: the CommonJS loader's, false when the file turns out to be an ES module;
// `own(err)`: an error of Node's vm made the context's own.
export function makeEsmLoader({ context, helpers, resolver, builtins, recordOf, loadCommonJs, fail, own }) {
  const { display, resolveFrom } = resolver;
  const ofModule = new WeakMap(); // vm.SourceTextModule -> its record
  const builtinModules = new Map(); // 'node:x' -> synthetic module
  const linking = new WeakSet(); // modules whose requests are linked (or being linked)

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
    if (!builtinModules.has(key)) builtinModules.set(key, syntheticModule(builtins.builtin(id, from, 'import'), key));
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

  return { builtinModule, moduleOfRecord, requireModule, importModule, importFrom };
}
