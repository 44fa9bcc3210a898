// Freezing the worker's own (host) realm before user code runs. Host objects are handed into the vm
// context (console, Buffer, URL, require('util'), ...), and through any of them user code reaches the host
// realm's prototypes. A getter planted on Object.prototype or EventEmitter.prototype is later called by
// Node itself with `this` set to the worker's real `process` (e.g. reading `process.noDeprecation` for a
// deprecation warning): a full escape. Frozen prototypes close that whole family of routes.
//
// The freezing must not cost user code V8's fast paths. V8 keeps "protectors": facts such as "no
// Array.prototype has had its `constructor` changed" that let array methods skip the species lookup,
// promises skip looking up `then`, `for...of` skip the iterator protocol. A protector holds for the whole
// isolate, every realm in it: redefining `constructor` on the host's Array.prototype (even only to make it
// read-only) turns off the fast path for the workspace's own arrays too, in its own vm context (array
// methods 5x slower, regular expressions 10x). So the watched properties of the language's intrinsics are
// never redefined one by one: objects are frozen with Object.freeze, which V8 does as one map transition
// that touches no protector (tests/e2e/test_js_speed.py checks every protector after hardening).
import vm from 'node:vm';

// Instances may still override what they inherit (`this._events = ...`, `err.name = ...`): on a frozen
// prototype such a data property becomes an accessor whose setter defines the property on the instance,
// so Node's own code keeps working (the "override mistake" of frozen prototypes). Node's prototypes get
// this for every data property; the language's own for the few names code assigns on instances, so
// method lookups on them (`array.push`) stay plain data reads.
const INTRINSIC_OVERRIDES = new Set([
  'constructor', 'name', 'message', 'toString', 'valueOf', 'toLocaleString', 'toJSON',
]);
const frozen = new WeakSet();

// What a bare V8 realm has: the language's intrinsics, none of Node's.
export const INTRINSIC_NAMES = vm
  .runInNewContext('Object.getOwnPropertyNames(globalThis)')
  .filter((name) => name !== 'globalThis' && name !== 'console');

// Two of those names are watched by V8's protectors on some intrinsics (LookupIterator::UpdateProtector):
// `constructor` of the prototypes whose methods look up @@species, `valueOf` and `toString` of
// String.prototype. There they stay plain values (frozen, so assigning them on an instance fails).
const TypedArray = Reflect.getPrototypeOf(Int8Array);
const TYPED_ARRAYS = INTRINSIC_NAMES.map((name) => globalThis[name]).filter(
  (value) => typeof value === 'function' && Reflect.getPrototypeOf(value) === TypedArray,
);
const SPECIES_PROTOTYPES = new Set([Array, Promise, RegExp, TypedArray, ...TYPED_ARRAYS].map((ctor) => ctor.prototype));
const watched = (object, key) =>
  (key === 'constructor' && SPECIES_PROTOTYPES.has(object)) ||
  ((key === 'valueOf' || key === 'toString') && object === String.prototype);

function tameOverrides(object, overridable) {
  for (const key of Reflect.ownKeys(object)) {
    const described = Reflect.getOwnPropertyDescriptor(object, key);
    if (!('value' in described) || !described.configurable || !(overridable?.has(key) ?? true)) continue;
    if (watched(object, key)) continue; // stays a plain value (see the top)
    const { value } = described;
    Reflect.defineProperty(object, key, {
      get: () => value,
      set(replacement) {
        if (this === object) {
          throw new TypeError(`Cannot assign to read only property '${String(key)}' of a frozen prototype`);
        }
        Reflect.defineProperty(this, key, { value: replacement, writable: true, enumerable: true, configurable: true });
      },
      enumerable: described.enumerable,
      configurable: false,
    });
  }
}

const isPrototype = (object) => {
  const described = Reflect.getOwnPropertyDescriptor(object, 'constructor');
  return typeof described?.value === 'function' && described.value.prototype === object;
};
const isPlain = (object) => {
  const proto = Reflect.getPrototypeOf(object);
  return proto === null || proto === Object.prototype;
};

// Node defines some exports lazily: `require('buffer').Blob` is a configurable getter that loads its module
// on first read and then redefines itself as a plain value, which a frozen object refuses ("Cannot
// redefine property: Blob"). So each such getter of a host namespace or function is read once before it
// is frozen: a lazy one is a plain value by then, and is hardened as any value. Getters that stay getters
// (`http.globalAgent`) are left as they are.
function settleLazyGetters(object) {
  for (const key of Reflect.ownKeys(object)) {
    const described = Reflect.getOwnPropertyDescriptor(object, key);
    if (!described.configurable || typeof described.get !== 'function') continue;
    try {
      Reflect.get(object, key);
    } catch {} // a getter that fails now fails the same way for the function that reads it
  }
}

// Freeze `value`, its prototypes and the functions and prototypes reachable from its properties. An
// instance (an object that is neither a function, a prototype nor a plain namespace) keeps its own state
// writable, so live objects such as `http.globalAgent` still work: only what it inherits from is frozen.
export function harden(value, { root = true, prototype = false, overridable = null } = {}) {
  if ((typeof value !== 'object' && typeof value !== 'function') || value === null || frozen.has(value)) return;
  frozen.add(value);
  harden(Reflect.getPrototypeOf(value), { root: false, prototype: true, overridable });
  const isFunction = typeof value === 'function';
  const asPrototype = !isFunction && (prototype || isPrototype(value));
  if (!(root || isFunction || asPrototype || isPlain(value))) return;
  if (asPrototype) tameOverrides(value, overridable);
  else if (!overridable) settleLazyGetters(value);
  for (const key of Reflect.ownKeys(value)) {
    const described = Reflect.getOwnPropertyDescriptor(value, key);
    const next = { root: false, prototype: isFunction && key === 'prototype', overridable };
    harden(described.value, next);
    harden(described.get, next);
    harden(described.set, next);
  }
  freeze(value);
}

// Object.freeze, in one step (see the top), except for an object holding a data property Node made
// writable but not configurable (as `EventEmitter.prototype[kCapture]`, which every emitter sets on
// itself): that property stays writable. It can only ever hold a value, never become a getter, and
// freezing it would break every emitter. A function's `prototype` is frozen even where Node left it
// writable: `EventEmitter.prototype = {...}` would give classes Node defines later a prototype of the
// workspace's making.
function freeze(object) {
  const keys = Reflect.ownKeys(object);
  const keepsWritable = (key) => {
    const described = Reflect.getOwnPropertyDescriptor(object, key);
    return 'value' in described && described.writable && !described.configurable;
  };
  if (typeof object === 'function' || Array.isArray(object) || !keys.some(keepsWritable)) {
    Object.freeze(object);
    return;
  }
  for (const key of keys) {
    const described = Reflect.getOwnPropertyDescriptor(object, key);
    if (!described.configurable) continue;
    const locked = 'value' in described ? { configurable: false, writable: false } : { configurable: false };
    Reflect.defineProperty(object, key, locked);
  }
  Reflect.preventExtensions(object);
}

// Intrinsics no global names: iterator, generator and async-function prototypes.
function hiddenIntrinsics() {
  const proto = Reflect.getPrototypeOf;
  return [
    proto([][Symbol.iterator]()),
    proto(new Map().entries()),
    proto(new Set().values()),
    proto(''[Symbol.iterator]()),
    proto(/x/[Symbol.matchAll]('')),
    proto(function* () {}),
    proto(async function () {}),
    proto(async function* () {}),
    proto((function* () {})()),
    proto((async function* () {})()),
  ];
}

// The language's intrinsics of this realm, plus the host objects user code can reach.
export function hardenRealm(hostObjects) {
  const intrinsic = { overridable: INTRINSIC_OVERRIDES };
  for (const name of INTRINSIC_NAMES) harden(globalThis[name], intrinsic);
  for (const object of hiddenIntrinsics()) harden(object, intrinsic);
  for (const object of hostObjects) harden(object);
}
