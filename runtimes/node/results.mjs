// A function's return value as JSON text, following the service's rules:
// undefined -> null, Date -> ISO string, BigInt -> string, Map -> object, Set -> array,
// typed arrays (Buffer included) -> arrays; a cycle, or a function or symbol at the top -> not serializable.
import { types } from 'node:util';

export class NotSerializable extends Error {
  constructor(message, status = 'not_serializable') {
    super(message);
    this.status = status;
  }
}

// `this[key]` is the value before its own toJSON ran, so Buffer (whose toJSON gives {type, data}) and
// other typed arrays become plain arrays as documented.
function replacer(key, value) {
  const raw = this[key];
  if (typeof value === 'bigint') return value.toString();
  if (raw === null || typeof raw !== 'object') return value;
  if (types.isMap(raw)) return Object.fromEntries(Array.from(raw, ([k, v]) => [String(k), v]));
  if (types.isSet(raw)) return Array.from(raw);
  if (types.isTypedArray(raw)) return Array.from(raw);
  if (types.isAnyArrayBuffer(raw)) return Array.from(new Uint8Array(raw));
  return value;
}

export function toJson(value, maxBytes) {
  if (value === undefined) return 'null';
  const kind = typeof value;
  if (kind === 'function' || kind === 'symbol') {
    throw new NotSerializable(`the function returned a ${kind}, which JSON cannot hold`);
  }
  let text;
  try {
    text = JSON.stringify(value, replacer);
  } catch (err) {
    const why = err instanceof RangeError ? 'it is nested too deeply (or circular)' : String(err.message).split('\n')[0];
    throw new NotSerializable(`the result cannot become JSON: ${why}`);
  }
  if (text === undefined) throw new NotSerializable('the result cannot become JSON (its toJSON gave undefined)');
  if (text.length > maxBytes) {
    throw new NotSerializable(
      `the result is ${text.length} bytes of JSON, above the limit of ${maxBytes} bytes`,
      'resource_limit',
    );
  }
  return text;
}
