"""The sandbox child: runs ONE agent's code, then exits. Started by the host (``gofannon.sandbox.pool``).

Standard library only, and started as a script (``python -I -S -B child/__main__.py '<cfg>'``): it must start
fast and must not see the project, its settings or its secrets. Inside the child this package is imported under
the name ``child`` (see ``__main__``); the host imports it as ``gofannon.sandbox.child`` only for the channel's
constants. Run as a zygote (``{"zygote": true}``) it imports everything once and forks the children on the
host's request (``zygote``); otherwise it is the child itself (``serve``).

Lifecycle of a child:

1. start-up (while warm in the pool): import what a run needs (``__main__``, ``serve.warm_up``), confine itself
   (``confine``: working directory, rlimits, Landlock, no capabilities, seccomp, process guards), rehearse a
   run, then send ``{"t": "ready"}``;
2. read one request frame from stdin, install the agent API (``runtime``: ``call_llm``, ``data_store``, the
   ``httpx`` shim, ...), exec the code in one namespace and ``await run(input_dict=..., tools=...)``;
3. send ``{"t": "done", ...}`` and ``os._exit``.

Channel (``channel``; docs/sandbox.md): frames are a 4-byte big-endian length followed by UTF-8 JSON.
fd 0 (host → child): the request, then replies ``{"t": "reply", "id", "ok", "value" | "etype", "error"}``.
``out`` (child → host): ``ready``, ``op`` ``{"id", "op", "args"}``, ``event`` and ``done`` frames.
``sync_out``/``sync_in``: blocking request/reply pair for the synchronous ``data_store`` API.
"""
