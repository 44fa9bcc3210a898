// The playground's editor: CodeMirror 6 with JavaScript and Python, behind a small API that
// ../playground.js uses as `window.PlaygroundEditor`. Bundled into ../editor.js by ./build.sh.
import { basicSetup } from "codemirror";
import { EditorView, Decoration } from "@codemirror/view";
import { EditorState, Compartment, StateEffect, StateField } from "@codemirror/state";
import { javascript } from "@codemirror/lang-javascript";
import { python } from "@codemirror/lang-python";
import { setDiagnostics } from "@codemirror/lint";

// The page's content-security-policy allows <style> elements with this nonce only (CodeMirror adds its own).
const nonceMeta = document.querySelector('meta[name="csp-nonce"]');
const nonce = nonceMeta ? nonceMeta.content : "";

const languageOf = (name) => (name === "python" ? python() : javascript());

// The lines of compile errors: line decorations (class cm-errorLine) until the code changes.
const setErrorLines = StateEffect.define();
const errorLines = StateField.define({
  create: () => Decoration.none,
  update(marks, tr) {
    for (const effect of tr.effects) {
      if (effect.is(setErrorLines)) {
        const lines = [...new Set(effect.value)].sort((a, b) => a - b);
        return Decoration.set(
          lines.map((n) =>
            Decoration.line({ class: "cm-errorLine", attributes: { "data-line": String(n) } }).range(tr.state.doc.line(n).from),
          ),
        );
      }
    }
    return tr.docChanged ? Decoration.none : marks;
  },
  provide: (field) => EditorView.decorations.from(field),
});

function create(parent, options = {}) {
  const language = new Compartment();
  const view = new EditorView({
    parent,
    state: EditorState.create({
      doc: options.doc || "",
      extensions: [
        basicSetup,
        EditorView.cspNonce.of(nonce),
        language.of(languageOf(options.language)),
        errorLines,
        EditorView.updateListener.of((update) => {
          if (update.docChanged && options.onChange) options.onChange(update.state.doc.toString());
        }),
      ],
    }),
  });
  return {
    view,
    getCode: () => view.state.doc.toString(),
    setCode(code, lang) {
      view.dispatch({
        changes: { from: 0, to: view.state.doc.length, insert: code },
        effects: [language.reconfigure(languageOf(lang)), setErrorLines.of([])],
      });
      view.dispatch(setDiagnostics(view.state, []));
    },
    setLanguage(lang) {
      view.dispatch({ effects: language.reconfigure(languageOf(lang)) });
    },
    // Marks each error's (1-based) line, clamped to the document, with its message as a diagnostic;
    // the cursor goes to the first one.
    markErrors(errors) {
      const doc = view.state.doc;
      const marks = errors.map(({ line, column, message }) => {
        const n = Math.min(Math.max(1, line || 1), doc.lines);
        const { from: start, to } = doc.line(n);
        const from = Math.min(start + Math.max(0, (column || 1) - 1), to);
        return { n, from, to, message };
      });
      if (!marks.length) return;
      view.dispatch({ effects: setErrorLines.of(marks.map((m) => m.n)), selection: { anchor: marks[0].from }, scrollIntoView: true });
      const diagnostics = marks.map(({ from, to, message }) => ({ from, to, severity: "error", message: message || "error" }));
      view.dispatch(setDiagnostics(view.state, diagnostics));
    },
    clearError() {
      view.dispatch({ effects: setErrorLines.of([]) });
      view.dispatch(setDiagnostics(view.state, []));
    },
    focus: () => view.focus(),
  };
}

window.PlaygroundEditor = { create };
