"""The kernel's own helpers (never loaded into a workspace's interpreter).

interpreters  a workspace's interpreter: a subinterpreter with the sandbox, or the kernel's own
packages     which installed distributions ship compiled extension modules (`inspect` requests)
"""
