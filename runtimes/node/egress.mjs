// The service refuses a function's connection to a forbidden address with EACCES (the egress guard,
// adapters/hosts/egress_guard.py). Node reports that as a bare "connect EACCES 127.0.0.1:4000"; this adds what
// refused it and which settings decide, to the very error the function gets (net, http, https, fetch, tls,
// and dgram when it is allowed).
import net from 'node:net';
import { createRequire } from 'node:module';

const HINTS = {
  public:
    'FUNCTIONS_EGRESS=public lets functions reach public addresses only; ' +
    'an internal service can be allowed with FUNCTIONS_EGRESS_ALLOW',
  none: 'FUNCTIONS_EGRESS=none lets functions reach no address; one can be allowed with FUNCTIONS_EGRESS_ALLOW',
};
const REFUSED_CALLS = new Set(['connect', 'send']);
let explained = false;

function explainer(hint) {
  const explain = (err) => {
    if (err === null || typeof err !== 'object') return err;
    if (err.code === 'EACCES' && REFUSED_CALLS.has(err.syscall) && !String(err.message).includes('egress policy')) {
      const before = err.message;
      err.message = `${before} (refused by the egress policy: ${hint})`;
      if (typeof err.stack === 'string') err.stack = err.stack.replace(before, err.message);
    }
    if (Array.isArray(err.errors) && err.errors.length) {
      // Happy eyeballs (`localhost` is ::1 and 127.0.0.1): one error per address tried, and an aggregate
      // whose own message is empty. It says what its errors say.
      err.errors.forEach(explain);
      const messages = err.errors.map((inner) => String(inner?.message ?? inner));
      if (!String(err.message).includes('egress policy') && messages.some((m) => m.includes('egress policy'))) {
        const before = err.message;
        err.message = messages.join('; ');
        if (typeof err.stack === 'string') err.stack = before ? err.stack.replace(before, err.message) : `${err.name}: ${err.message}\n${err.stack.split('\n').slice(1).join('\n')}`;
      }
    }
    return err;
  };
  return explain;
}

// Once per worker, before the realm is frozen. `builtins` is NODE_BUILTIN_MODULES: dgram is patched only
// when functions may load it.
export function explainRefusals(mode, builtins) {
  const hint = HINTS[mode];
  if (!hint || explained) return;
  explained = true;
  const explain = explainer(hint);
  const destroy = net.Socket.prototype.destroy;
  net.Socket.prototype.destroy = function (err, callback) {
    return destroy.call(this, explain(err), callback);
  };
  if (!builtins.includes('dgram') && !builtins.includes('node:dgram')) return;
  const dgram = createRequire(import.meta.url)('node:dgram');
  const emit = dgram.Socket.prototype.emit;
  dgram.Socket.prototype.emit = function (event, ...args) {
    if (event === 'error') explain(args[0]);
    return emit.call(this, event, ...args);
  };
  for (const name of ['send', 'connect']) {
    const real = dgram.Socket.prototype[name];
    dgram.Socket.prototype[name] = function (...args) {
      const last = args.length - 1;
      if (typeof args[last] === 'function') {
        const callback = args[last];
        args[last] = (err, ...rest) => callback(explain(err), ...rest);
      }
      return real.apply(this, args);
    };
  }
}
