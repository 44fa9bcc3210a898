// The globals of a workspace's vm context as script-scope bindings, for speed. Node's vm context answers
// every global name through an interceptor, a call into C++ that V8 cannot cache: `Math.max(a, b)` or
// `JSON.stringify(x)` in a loop of user code ran ~300x slower than in plain node just for finding `Math`.
// A top-level binding shadows the global object's property and is found the fast way, by every function
// of the context, those compiled before it (the workspace's script) and after (its packages, modules).
//
// - The language's own globals (`Math`, `JSON`, `Array`, `Promise`, ...) become `const`s, which V8 folds
//   into the code as it does plain node's: a `let` would leave calls through them 2-3x slower. Assigning
//   one (`Promise = x`) is a TypeError, and `globalThis.Promise = x` no longer changes what the name means.
// - The sandbox's own (`cache`, `console`, `require`, `setTimeout`, `Buffer`, ...) become `let`s that stay
//   in step with the global property: `cache = x` is what `globalThis.cache` reads, and the other way round.
import vm from 'node:vm';
import { INTRINSIC_NAMES } from './harden.mjs';

const IDENTIFIER = /^[A-Za-z_$][\w$]*$/;
const LANGUAGE = new Set(INTRINSIC_NAMES);

// Binds every configurable data property the context's global has now, except `skip` (names the
// workspace's script declared with `var`: a binding of the same name would not compile).
export function bindGlobals(context, skip) {
  const global = vm.runInContext('this', context);
  const skipped = new Set(skip);
  const names = Reflect.ownKeys(global).filter((name) => {
    if (typeof name !== 'string' || !IDENTIFIER.test(name) || skipped.has(name) || name === 'eval') return false;
    const described = Reflect.getOwnPropertyDescriptor(global, name);
    return described?.configurable === true && 'value' in described;
  });
  if (!bind(context, global, names)) {
    // One name cannot be bound (declared by the script in a way that conflicts): the others still can.
    for (const name of names) bind(context, global, [name]);
  }
}

function bind(context, global, names) {
  const constants = names.filter((name) => LANGUAGE.has(name));
  const variables = names.filter((name) => !LANGUAGE.has(name));
  const declare = (keyword, list) => (list.length ? `${keyword} ${list.map((name) => `${name} = this.${name}`).join(', ')};\n` : '');
  const source =
    declare('const', constants) +
    declare('let', variables) +
    `[${variables.map((name) => `[() => ${name}, (value) => { ${name} = value; }]`).join(', ')}]`;
  let accessors;
  try {
    accessors = vm.runInContext(source, context, { filename: 'globals' });
  } catch {
    return false; // a declaration that conflicts fails before any binding of its script exists
  }
  variables.forEach((name, index) => {
    const { enumerable } = Reflect.getOwnPropertyDescriptor(global, name);
    const [get, set] = accessors[index];
    Reflect.defineProperty(global, name, { get, set, enumerable, configurable: true });
  });
  return true;
}
