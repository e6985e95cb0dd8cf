"""Entry of a sandbox child or zygote: ``python -I -S -B .../child/__main__.py '<json cfg>'``.

Started by ``gofannon.sandbox.pool`` as a script, never as ``gofannon.sandbox.child``: the interpreter sees
neither site-packages nor the project (``-I -S``), and inside bubblewrap this package, bound at
``/opt/gofannon/child``, is all there is of gofannon. So the package's parent directory goes on ``sys.path``
just long enough to import the package under its own name, ``child``, and both come off again: agent code
imports from the standard library only, as before.

Import order matters: every module is imported here, then ``warm_up`` exercises the event loop and ctypes, all
before the process confines itself (in ``serve.serve_one``, in each child), because seccomp and Landlock then
refuse some of what imports need. Nothing of the agent exists before confinement is complete.
"""

import json
import os
import sys


def main() -> None:
    parent = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    sys.path.insert(0, parent)
    try:
        from child import serve, zygote  # type: ignore[import-not-found]  # this package, by its own name
    finally:
        sys.path.remove(parent)
    for name in [m for m in sys.modules if m == "child" or m.startswith("child.")]:
        del sys.modules[name]  # loaded for good (no lazy imports of our own); agents cannot import them
    cfg = json.loads(sys.argv[1])
    serve.warm_up()
    if cfg.get("zygote"):
        zygote.zygote(cfg)
    else:
        serve.serve_one(cfg)


if __name__ == "__main__":
    main()
