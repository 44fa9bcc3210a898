"""The sandbox each interpreter holds: a workspace's subinterpreter, or a dedicated kernel's main interpreter.

The kernel imports `sandbox.entry` into a fresh interpreter before any user code, then takes the
package out of `sys.modules` and out of reach of imports (user code cannot name it either: see
`imports.SANDBOX_MODULES`). It reaches it through `entry.ENTRY`, one JSON text in, one JSON text out,
so nothing but strings crosses between interpreters. Standard library only.

checks       what user code may say: compile checks, AST refusals, the function wrapper
attributes   getattr and str.format guards (what user code may read by name)
imports      the guarded `__import__`, read-only module views, the import refusals' wording
patches      what module views hand out in place of a module's own (attrgetter, atexit, finalize...)
packages     what installed packages may do while user code runs: stand-ins, pickles
containment  the audit hook (files, processes, sockets), the stdlib's own patches
output       logs: print, sys.stdout/stderr, logging, the per-run Capture
results      the reply: JSON of results, errors in the user's terms, size limits
workspace    a workspace's functions and their globals, runs
entry        configure / load / run / check / release: what the kernel calls
"""
