// The playground page: workspaces, an editor, runs, versions and run history, all through the public
// API (same origin, `Authorization: Bearer <key>` when a key is given). No framework: plain DOM, and
// every value from the service is put in the page as text, never as HTML.
"use strict";

const KEY_STORE = "functions-playground-key";
const STARTER = {
  functions: {
    hello: { code: 'console.log("greeting", name);\nreturn "Hello " + name;', parameters: { name: { type: "string", default: "world" } } },
  },
};
const TYPES = ["string", "number", "integer", "boolean", "object", "array", "null"];

const $ = (id) => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) node.append(child instanceof Node ? child : String(child));
  return node;
};
const json = (value) => JSON.stringify(value, null, 2);
const enc = encodeURIComponent;

const state = {
  key: sessionStorage.getItem(KEY_STORE) || "",
  ws: null, // the workspace id shown
  body: null, // its body as edited here (unsaved edits included)
  fn: null, // the function in the editor
  dirty: false,
  editor: null,
  version: null, // the version whose diff is shown
};

// ---- the API ----

async function api(method, path, body) {
  const headers = {};
  if (state.key) headers.authorization = "Bearer " + state.key;
  if (body !== undefined) headers["content-type"] = "application/json";
  let response;
  try {
    response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (error) {
    return { status: 0, ok: false, data: { error: { type: "NetworkError", message: String(error) } }, headers: new Headers() };
  }
  let data = null;
  const text = await response.text();
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { error: { type: "HTTPError", message: text.slice(0, 500) } };
  }
  if (response.status === 401) {
    setStatus($("key-status"), "the service needs an API key (or this one is wrong)", "error");
  }
  return { status: response.status, ok: response.ok, data, headers: response.headers };
}

const errorText = (answer) => {
  const error = (answer.data && answer.data.error) || {};
  return `${error.type || answer.status}: ${error.message || "no message"}`;
};

function setStatus(node, text, kind = "") {
  node.textContent = text;
  node.className = "status " + kind;
}

// ---- workspaces ----

async function loadWorkspaces() {
  const answer = await api("GET", "v2/functions");
  const list = $("workspaces");
  list.replaceChildren();
  if (!answer.ok) {
    $("workspaces-status").textContent = errorText(answer);
    return;
  }
  setStatus($("key-status"), state.key ? "key in use" : "", "muted");
  const ids = (answer.data.workspaces || []).slice().sort();
  $("workspaces-status").textContent = ids.length ? "" : "No workspace yet: create one.";
  for (const id of ids) {
    const button = el("button", { class: id === state.ws ? "selected" : "", "data-workspace": id, onclick: () => openWorkspace(id) }, id);
    list.append(el("li", {}, button));
  }
}

async function openWorkspace(id, fn) {
  if (state.dirty && id !== state.ws && !confirm(`Leave ${state.ws} without saving?`)) return;
  const answer = await api("GET", `v2/functions/${enc(id)}`);
  if (!answer.ok) {
    $("workspaces-status").textContent = errorText(answer);
    return;
  }
  state.ws = id;
  state.body = answer.data;
  state.dirty = false;
  location.hash = id;
  $("workbench").hidden = false;
  $("workspace-title").textContent = id;
  for (const button of document.querySelectorAll("#workspaces button")) {
    button.classList.toggle("selected", button.dataset.workspace === id);
  }
  setStatus($("save-status"), "");
  showFunctions(fn);
  loadVersions();
}

async function createWorkspace(event) {
  event.preventDefault();
  const id = $("new-workspace").value.trim();
  if (!id) return;
  const existing = await api("GET", `v2/functions/${enc(id)}`);
  if (existing.ok) {
    $("workspaces-status").textContent = `${id} exists: opened it.`;
  } else {
    const answer = await api("POST", `v2/functions/${enc(id)}`, STARTER);
    if (!answer.ok) {
      $("workspaces-status").textContent = errorText(answer);
      return;
    }
  }
  $("new-workspace").value = "";
  state.dirty = false;
  await loadWorkspaces();
  await openWorkspace(id);
}

// ---- functions, editor, declarations ----

const functions = () => state.body.functions || (state.body.functions = {});
const current = () => functions()[state.fn];

function showFunctions(preferred) {
  const names = Object.keys(functions());
  const select = $("function-select");
  select.replaceChildren(...names.map((name) => el("option", { value: name }, name)));
  const fn = names.includes(preferred) ? preferred : names.includes(state.fn) ? state.fn : names[0] || null;
  selectFunction(fn);
}

function selectFunction(fn) {
  state.fn = fn;
  $("function-select").value = fn || "";
  const definition = fn ? current() : null;
  const language = (definition && definition.language) || "nodejs";
  $("language-select").value = language;
  state.editor.setCode(definition ? definition.code || "" : "", language);
  $("declarations").value = json((definition && definition.parameters) || {});
  $("declarations-status").textContent = "";
  $("run").disabled = !fn;
  $("run-output").hidden = true;
  renderParameters();
  loadHistory();
  if (state.version !== null) showVersion(state.version);
}

function addFunction(event) {
  event.preventDefault();
  const name = $("new-function").value.trim();
  if (!name || !state.body) return;
  if (!functions()[name]) {
    const language = $("language-select").value;
    const code = language === "python" ? "return None" : "return null;";
    functions()[name] = language === "python" ? { code, language, parameters: {} } : { code, parameters: {} };
    markDirty();
  }
  $("new-function").value = "";
  showFunctions(name);
}

function markDirty() {
  state.dirty = true;
  setStatus($("save-status"), "unsaved changes (Run uses the saved version)", "muted");
}

function onCodeChange(code) {
  if (!state.fn || current().code === code) return;
  current().code = code;
  markDirty();
}

function onLanguageChange() {
  if (!state.fn) return;
  const language = $("language-select").value;
  if (language === "nodejs" && !current().language) return;
  current().language = language;
  state.editor.setLanguage(language);
  markDirty();
}

function onDeclarationsChange() {
  if (!state.fn) return;
  let parameters;
  try {
    parameters = JSON.parse($("declarations").value || "{}");
    if (!parameters || typeof parameters !== "object" || Array.isArray(parameters)) throw new Error("not an object");
  } catch (error) {
    $("declarations-status").textContent = "not a JSON object: " + error.message;
    return;
  }
  $("declarations-status").textContent = "";
  current().parameters = parameters;
  markDirty();
  renderParameters();
}

// ---- parameters → inputs ----

function renderParameters() {
  const box = $("parameters");
  // What was typed stays when the inputs are drawn again (a save, a restore), for the same name and type.
  const typed = new Map([...box.querySelectorAll("[data-param]")].map((i) => [i.dataset.param + ":" + i.dataset.type, i.value]));
  box.replaceChildren();
  const declared = (state.fn && current().parameters) || {};
  const names = Object.keys(declared);
  if (!names.length) box.append(el("p", { class: "muted" }, "No declared parameters."));
  for (const name of names) {
    const spec = declared[name] || {};
    const type = TYPES.includes(spec.type) ? spec.type : "any";
    const id = "param-" + name;
    const hint = "default" in spec ? `${type}, default ${JSON.stringify(spec.default)}` : type;
    let input;
    if (type === "boolean") {
      input = el("select", {}, el("option", { value: "" }, "(not given)"), el("option", { value: "true" }, "true"), el("option", { value: "false" }, "false"));
    } else if (type === "object" || type === "array" || type === "any") {
      input = el("textarea", { rows: "3", spellcheck: "false", placeholder: type === "array" ? "[...] as JSON" : "JSON" });
    } else if (type === "number" || type === "integer") {
      input = el("input", { type: "number", step: type === "integer" ? "1" : "any" });
    } else if (type === "null") {
      input = el("input", { type: "text", value: "null", disabled: "" });
    } else {
      input = el("input", { type: "text" });
    }
    input.id = id;
    input.dataset.param = name;
    input.dataset.type = type;
    if (typed.has(name + ":" + type) && type !== "null") input.value = typed.get(name + ":" + type);
    if (input.placeholder === "" && "default" in spec) input.placeholder = JSON.stringify(spec.default);
    const label = el("label", { for: id }, name, el("small", {}, hint));
    if (spec.description) label.title = spec.description;
    box.append(el("div", { class: "param" }, label, input));
  }
}

// The run's parameters: an empty input is left out, so the declared default applies.
function collectParameters() {
  const parameters = {};
  for (const input of document.querySelectorAll("#parameters [data-param]")) {
    const { param, type } = input.dataset;
    const raw = input.value;
    if (type === "null") parameters[param] = null;
    else if (raw === "") continue;
    else if (type === "string") parameters[param] = raw;
    else if (type === "boolean") parameters[param] = raw === "true";
    else if (type === "number" || type === "integer") parameters[param] = Number(raw);
    else {
      try {
        parameters[param] = JSON.parse(raw);
      } catch (error) {
        throw new Error(`${param}: not JSON (${error.message})`);
      }
    }
  }
  return parameters;
}

// ---- save ----

async function save() {
  if (!state.body) return;
  $("save").disabled = true;
  setStatus($("save-status"), "saving…", "muted");
  state.editor.clearError();
  const answer = await api("POST", `v2/functions/${enc(state.ws)}`, state.body);
  $("save").disabled = false;
  if (answer.ok) {
    state.body = answer.data;
    state.dirty = false;
    setStatus($("save-status"), "saved", "ok");
    loadWorkspaces();
    loadVersions();
    return;
  }
  const error = (answer.data && answer.data.error) || {};
  if (error.type === "CompileError") {
    if (error.function && error.function !== state.fn && functions()[error.function]) showFunctions(error.function);
    const where = `${error.function || state.fn}, line ${error.line ?? "?"}, column ${error.column ?? "?"}`;
    setStatus($("save-status"), `CompileError in ${where}: ${error.message}`, "error");
    const all = Array.isArray(error.errors) && error.errors.length ? error.errors : [error];
    state.editor.markErrors(all.filter((e) => !e.function || e.function === state.fn));
  } else {
    setStatus($("save-status"), errorText(answer), "error");
  }
}

// ---- run ----

async function run() {
  if (!state.fn) return;
  let parameters;
  try {
    parameters = collectParameters();
  } catch (error) {
    showRun("InvalidInput", error.message, null, [], "");
    return;
  }
  $("run").disabled = true;
  const answer = await api("POST", `v2/functions/${enc(state.ws)}/run/${enc(state.fn)}`, { parameters });
  $("run").disabled = false;
  const data = answer.data || {};
  const worker = answer.headers.get("x-functions-worker") || "";
  if (answer.ok) {
    showRun("ok", json(data.result), data.duration, data.logs || [], worker);
  } else {
    const { type, message, stack, ...rest } = data.error || {};
    const details = Object.keys(rest).length ? "\n" + json(rest) : "";
    showRun(type || String(answer.status), (stack || message || "") + details, data.duration, data.logs || [], worker);
  }
  loadHistory();
}

function showRun(status, text, duration, logs, worker) {
  $("run-output").hidden = false;
  setStatus($("run-status"), status, status === "ok" ? "ok" : "error");
  $("run-duration").textContent = typeof duration === "number" ? `${duration.toFixed(2)} ms` : "";
  $("run-worker").textContent = worker;
  $("run-worker").className = "badge " + worker;
  $("run-worker").hidden = !worker;
  $("run-result").textContent = text;
  renderLogs($("run-logs"), logs);
}

function renderLogs(list, logs) {
  list.replaceChildren(
    ...logs.map((entry) =>
      el("li", {}, el("span", { class: "level level-" + entry.level }, entry.level), entry.message),
    ),
  );
}

// ---- versions and diff ----

async function loadVersions() {
  const list = $("versions");
  const answer = await api("GET", `v2/functions/${enc(state.ws)}/versions`);
  list.replaceChildren();
  if (!answer.ok) {
    $("versions-status").textContent = "Versions are not available: " + errorText(answer);
    return;
  }
  const versions = answer.data.versions || [];
  $("versions-status").textContent = versions.length ? "Pick a version to see its diff with the code here." : "No versions yet.";
  for (const entry of versions) {
    const names = Array.isArray(entry.functions) ? entry.functions : Object.keys(entry.functions || {});
    const button = el(
      "button",
      { "data-version": entry.version, class: entry.version === state.version ? "selected" : "", onclick: () => showVersion(entry.version) },
      `v${entry.version}`,
      entry.current ? el("span", { class: "current" }, "current") : "",
      el("br"),
      el("small", { class: "muted" }, `${formatTime(entry.savedAt)} · ${names.join(", ")}`),
    );
    list.append(el("li", {}, button));
  }
}

async function showVersion(version) {
  state.version = version;
  for (const button of document.querySelectorAll("#versions button")) {
    button.classList.toggle("selected", button.dataset.version === String(version));
  }
  const answer = await api("GET", `v2/functions/${enc(state.ws)}/versions/${enc(version)}`);
  const detail = $("version-detail");
  detail.hidden = false;
  $("version-title").textContent = `Version ${version} → the code here`;
  setStatus($("restore-status"), "");
  const diff = $("diff");
  diff.replaceChildren();
  if (!answer.ok) {
    diff.append(el("p", { class: "error" }, errorText(answer)));
    return;
  }
  const old = answer.data.functions || {};
  const now = functions();
  const names = [...new Set([...Object.keys(old), ...Object.keys(now)])];
  for (const name of names) {
    const before = old[name] ? old[name].code || "" : null;
    const after = now[name] ? now[name].code || "" : null;
    const note = before === null ? " (added since)" : after === null ? " (removed since)" : before === after ? " (same)" : "";
    diff.append(el("p", { class: "diff-title" }, name + note));
    if (before === after) continue;
    const lines = lineDiff(before === null ? [] : before.split("\n"), after === null ? [] : after.split("\n"));
    diff.append(el("ol", { class: "diff" }, ...lines.map(([op, text]) => el("li", { class: op === "+" ? "add" : op === "-" ? "del" : "" }, `${op} ${text}`))));
  }
}

// A line diff by longest common subsequence: [op, line] with op "-" (only in a), "+" (only in b), " ".
function lineDiff(a, b) {
  let start = 0;
  while (start < a.length && start < b.length && a[start] === b[start]) start++;
  let endA = a.length, endB = b.length;
  while (endA > start && endB > start && a[endA - 1] === b[endB - 1]) { endA--; endB--; }
  const midA = a.slice(start, endA), midB = b.slice(start, endB);
  const n = midA.length, m = midB.length;
  const out = a.slice(0, start).map((line) => [" ", line]);
  if (n * m > 4000000) {
    out.push(...midA.map((line) => ["-", line]), ...midB.map((line) => ["+", line]));
  } else {
    const width = m + 1;
    const lcs = new Uint32Array((n + 1) * width); // lcs[i][j]: of midA[i:] and midB[j:]
    for (let i = n - 1; i >= 0; i--) {
      for (let j = m - 1; j >= 0; j--) {
        lcs[i * width + j] = midA[i] === midB[j] ? lcs[(i + 1) * width + j + 1] + 1 : Math.max(lcs[(i + 1) * width + j], lcs[i * width + j + 1]);
      }
    }
    let i = 0, j = 0;
    while (i < n || j < m) {
      if (i < n && j < m && midA[i] === midB[j]) { out.push([" ", midA[i]]); i++; j++; }
      else if (i < n && (j === m || lcs[(i + 1) * width + j] >= lcs[i * width + j + 1])) { out.push(["-", midA[i]]); i++; }
      else { out.push(["+", midB[j]]); j++; }
    }
  }
  out.push(...a.slice(endA).map((line) => [" ", line]));
  return out;
}

async function restore() {
  const version = state.version;
  if (version === null) return;
  if (state.dirty && !confirm("Restoring replaces your unsaved changes. Go on?")) return;
  const answer = await api("POST", `v2/functions/${enc(state.ws)}/versions/${enc(version)}/restore`);
  if (!answer.ok) {
    setStatus($("restore-status"), errorText(answer), "error");
    return;
  }
  state.body = answer.data;
  state.dirty = false;
  showFunctions(state.fn);
  setStatus($("save-status"), `restored version ${version}`, "ok");
  await loadVersions();
  setStatus($("restore-status"), `restored version ${version}`, "ok");
}

// ---- run history ----

async function loadHistory() {
  const rows = $("history").tBodies[0];
  rows.replaceChildren();
  if (!state.fn) return;
  const answer = await api("GET", `v2/functions/${enc(state.ws)}/runs?function=${enc(state.fn)}&limit=50`);
  if (!answer.ok) {
    $("history-status").textContent = "Run history is not available: " + errorText(answer);
    return;
  }
  const runs = answer.data.runs || [];
  $("history-status").textContent = runs.length ? `The last ${runs.length} runs of ${state.fn}, newest first.` : `No runs of ${state.fn} yet.`;
  for (const entry of runs) {
    const output = entry.error ? json(entry.error) : json(entry.result);
    const logs = el("ol", { class: "logs" });
    renderLogs(logs, entry.logs || []);
    rows.append(
      el(
        "tr",
        { "data-run": entry.id || "" },
        el("td", {}, formatTime(entry.startedAt || entry.queuedAt)),
        el("td", {}, entry.version ?? ""),
        el("td", { class: entry.status === "succeeded" ? "status ok" : "status error" }, entry.status || "", worker(entry.cold)),
        el("td", {}, typeof entry.duration === "number" ? `${entry.duration.toFixed(2)} ms` : ""),
        el("td", {}, el("pre", {}, json(entry.parameters ?? {}))),
        el("td", {}, el("pre", {}, output ?? "")),
        el("td", {}, logs),
      ),
    );
  }
}

const worker = (cold) => (cold === true ? " · cold" : cold === false ? " · warm" : "");

function formatTime(value) {
  if (value === undefined || value === null) return "";
  const date = new Date(typeof value === "number" && value < 1e12 ? value * 1000 : value);
  return isNaN(date) ? String(value) : date.toLocaleString();
}

// ---- wiring ----

function showTab(tab) {
  for (const button of document.querySelectorAll(".tab")) {
    const selected = button === tab;
    button.classList.toggle("selected", selected);
    $(button.dataset.panel).hidden = !selected;
  }
}

function start() {
  state.editor = window.PlaygroundEditor.create($("editor"), { onChange: onCodeChange });
  $("api-key").value = state.key;
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    state.key = $("api-key").value.trim();
    sessionStorage.setItem(KEY_STORE, state.key);
    loadWorkspaces().then(() => state.ws && openWorkspace(state.ws, state.fn));
  });
  $("new-workspace-form").addEventListener("submit", createWorkspace);
  $("new-function-form").addEventListener("submit", addFunction);
  $("function-select").addEventListener("change", () => selectFunction($("function-select").value));
  $("language-select").addEventListener("change", onLanguageChange);
  $("declarations").addEventListener("input", onDeclarationsChange);
  $("save").addEventListener("click", save);
  $("run").addEventListener("click", run);
  $("version-restore").addEventListener("click", restore);
  for (const tab of document.querySelectorAll(".tab")) tab.addEventListener("click", () => showTab(tab));
  window.addEventListener("beforeunload", (event) => {
    if (state.dirty) event.preventDefault();
  });
  const wanted = decodeURIComponent(location.hash.slice(1));
  loadWorkspaces().then(() => wanted && openWorkspace(wanted));
}

start();
