// Stack traces in the user's terms: frames of the generated index.js become `at fn (fn:line:col)` with the
// line counted from the start of that function's own code; frames of packages keep their file
// (node_modules/x/index.js, shared/node_modules/...); frames of the service itself are dropped.
const FRAME = /^(\s*at )(async )?(?:[^(]*\()?index\.js:(\d+):(\d+)\)?$/;
const PACKAGE_FRAME = /[( ](shared\/)?node_modules\/[^()]*:\d+:\d+\)?$/;

function locate(line, lines) {
  for (const [name, [start, end]] of Object.entries(lines)) {
    // start - 1 is the wrapper line (parameter defaults); count it as the first line.
    if (line >= start - 1 && line <= end + 1) return { name, line: Math.max(1, line - start + 1) };
  }
  return null;
}

export function mapStack(stack, lines) {
  const out = [];
  for (const text of String(stack).split('\n')) {
    if (!/^\s*at /.test(text)) {
      out.push(text);
      continue;
    }
    const match = FRAME.exec(text);
    const where = match && locate(Number(match[3]), lines);
    if (where) out.push(`${match[1]}${match[2] ?? ''}${where.name} (${where.name}:${where.line}:${match[4]})`);
    else if (PACKAGE_FRAME.test(text)) out.push(text);
  }
  return out.join('\n');
}
