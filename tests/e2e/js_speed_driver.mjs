// tests/e2e/test_js_speed.py's driver: the real worker.mjs in a worker thread, as the host starts it, given
// a script of the test's functions; prints V8's protectors as a function sees them (node must run with
// --allow-natives-syntax) and, per snippet, its best time as a function and in plain node, side by side.
import { Worker } from 'node:worker_threads';

const { worker, builtins, protectors, snippets } = JSON.parse(process.argv[2]);
const timed = (code) => `const started = performance.now();\n${code}\nreturn performance.now() - started;`;
const functions = {
  protectors: `for (const name of ${JSON.stringify(builtins)}) require(name); fetch; Blob;
    return { ${protectors.map((name) => `${name}: %${name}()`).join(', ')} };`,
  overlap: 'await new Promise((resolve) => setTimeout(resolve, 20)); return 1;',
  ...Object.fromEntries(Object.entries(snippets).map(([name, code]) => [name, timed(code)])),
};
const script = [
  '// the test',
  ...Object.entries(functions).map(
    ([name, code]) => `functions[${JSON.stringify(name)}] = async function (parameters = {}) {\n${code}\n};`,
  ),
  '({});',
].join('\n');
const config = {
  builtins,
  maxResultBytes: 1e7,
  sharedModules: null,
  packages: {},
  logLimits: { maxEntries: 1000, maxBytes: 1e6 },
  egress: null,
};
const thread = new Worker(new URL(worker), { workerData: { script, folder: null, config }, env: {}, argv: [] });
const waiting = new Map();
let next = 0;
thread.on('message', (message) => {
  if (message.type !== 'ready') waiting.get(message.id)(JSON.parse(message.line));
});
const run = (fn) =>
  new Promise((resolve) => {
    next += 1;
    waiting.set(next, resolve);
    thread.postMessage({ id: next, fn, params: '{}' });
  });
const result = async (fn) => {
  const answer = await run(fn);
  if (answer.status !== 'succeeded') throw new Error(JSON.stringify(answer));
  return answer.result;
};

const AsyncFunction = (async () => {}).constructor;
const out = { protectors: await result('protectors'), times: {} };
await Promise.all([run('overlap'), run('overlap'), run('overlap')]); // AsyncLocalStorage on, then off again
for (const name of Object.keys(snippets)) {
  const plain = new AsyncFunction(timed(snippets[name]));
  const [inWorker, inNode] = [[], []];
  for (let i = 0; i < 5; i += 1) {
    inWorker.push(await result(name));
    inNode.push(await plain());
  }
  out.times[name] = [Math.min(...inWorker), Math.min(...inNode)];
}
console.log(JSON.stringify(out));
await thread.terminate();
