"""``gofannon`` command line: serve | worker | plugins | store."""

from __future__ import annotations

import argparse
import gc
import sys
from typing import TYPE_CHECKING, Any, Sequence

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.settings import Settings


def _settings() -> Settings:
    """Settings from the environment and config file; a bad value stops the command with its message."""
    from gofannon.settings import Settings

    try:
        return Settings.load()
    except (ValueError, FileNotFoundError) as exc:
        raise SystemExit(f"gofannon: bad configuration: {exc}") from None


def _configure_logging(settings: Settings) -> None:
    from gofannon.observability import configure_logging

    try:
        configure_logging(settings)
    except ValueError as exc:
        raise SystemExit(f"gofannon: bad configuration: {exc}") from None


def _metrics_plugin(settings: Settings) -> Any:
    """The metrics plugin (``start_metrics_server``, ``watch_kernel``), or stop with why ``--metrics-port``
    cannot work."""
    if not settings.metrics:
        raise SystemExit("gofannon: --metrics-port needs metrics on (GOFANNON_METRICS is off)")
    from gofannon.plugins import build_plugin_manager

    plugin = build_plugin_manager(settings).pm.get_plugin("metrics")
    if not (hasattr(plugin, "start_metrics_server") and hasattr(plugin, "watch_kernel")):
        raise SystemExit("gofannon: --metrics-port needs the metrics plugin, which is not loaded")
    return plugin


async def _collect_from_now_on(app: Any) -> None:
    """Turn the cyclic garbage collector back on once the app is built and the kernel open (see ``main``).

    What start-up built (modules, classes, routes, plugins) lives as long as the process: ``gc.freeze`` moves it
    out of the collector's sight, so later full collections do not walk it again either.
    """
    gc.freeze()
    gc.enable()


def event_loop(settings: Settings) -> Any:
    """The loop ``serve`` runs on (``GOFANNON_EVENT_LOOP``): uvloop's when it is installed (``auto``, the default;
    it takes about a tenth off the CPU time of a proxied call), else asyncio's own."""
    choice = str(settings.event_loop or "auto").strip().lower()
    if choice not in ("auto", "uvloop", "asyncio"):
        raise SystemExit(f"gofannon: bad configuration: GOFANNON_EVENT_LOOP={choice!r}: use auto, uvloop or asyncio")
    if choice == "asyncio":
        return None  # run_app makes asyncio's own
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise SystemExit("gofannon: GOFANNON_EVENT_LOOP=uvloop, but uvloop is not installed") from None
        return None
    return uvloop.new_event_loop()


def cmd_serve(args: argparse.Namespace) -> int:
    from gofannon.supervisor import parse_workers

    settings = _settings()
    _configure_logging(settings)
    host = args.host or settings.host
    port = args.port or settings.port
    try:
        workers = parse_workers(args.workers if args.workers is not None else settings.workers)
    except ValueError as exc:
        raise SystemExit(f"gofannon: bad configuration: {exc}") from None
    start_metrics = _metrics_plugin(settings).start_metrics_server if args.metrics_port is not None else None
    if workers > 1:
        from gofannon.supervisor import Supervisor

        gc.enable()  # the supervisor builds no app (see main)
        return Supervisor(settings, host, port, workers).run(args.metrics_port, start_metrics)
    from aiohttp import web

    from gofannon.app import create_app
    from gofannon.web.keys import KERNEL

    if args.reuse_port:  # a child of `serve --workers N`
        from gofannon.supervisor import follow_parent

        follow_parent()
    app = create_app(settings)
    app.on_startup.append(_collect_from_now_on)  # last: after the kernel has opened
    kernel = app[KERNEL]
    kernel.defer_warmup = True
    if start_metrics is not None:
        start_metrics(args.metrics_port, host, settings, kernel)

    def listening(message: str) -> None:
        """run_app's ``print``, called once every site listens: the moment to warm up (Kernel.serving)."""
        print(message, flush=True)
        kernel.serving()

    web.run_app(app, host=host, port=port, access_log=None, reuse_port=args.reuse_port or None, print=listening,
                loop=event_loop(settings))
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    from gofannon.jobs.worker import run_worker
    from gofannon.kernel import Kernel

    settings = _settings()
    _configure_logging(settings)
    new_kernel: Any = Kernel
    if args.metrics_port is not None:
        metrics = _metrics_plugin(settings)
        metrics.start_metrics_server(args.metrics_port, args.metrics_host or settings.host, settings)

        def new_kernel(*a: Any, **kw: Any) -> Kernel:
            """The worker's kernel, watched by the metrics plugin (store latency, sandbox pool)."""
            kernel = Kernel(*a, **kw)
            metrics.watch_kernel(kernel)
            return kernel
    return run_worker(settings, new_kernel, burst=args.burst, name=args.name, concurrency=args.concurrency,
                      grace=args.grace)


def cmd_plugins(args: argparse.Namespace) -> int:
    import json

    from gofannon.plugins import PluginManager

    settings = _settings()
    # List failures instead of stopping at the first one; strict mode still decides the exit status.
    pm = PluginManager(load=settings.load_plugins, disable=settings.disable_plugins, trace=settings.trace_plugins)
    pm.load_entry_points()
    # Run the register hooks too, so a plugin whose registration raises shows its error here.
    from gofannon.kernel import Kernel

    Kernel(settings, pm, role="cli")
    pm.collect("register_routes", key=lambda *a, **kw: repr(a[:2]), settings=settings)
    rows = pm.listing()
    if args.json:
        print(json.dumps([r.__dict__ for r in rows], indent=2))
        return 0
    for info in rows:
        kind = "bundled" if info.bundled else "installed"
        status = f"ERROR {info.error}" if info.error else ", ".join(info.hooks) or "(no hooks)"
        print(f"{info.name:<22} {info.version or '-':<10} {kind:<9} {status}")
    return 1 if any(r.error for r in rows) and settings.strict_plugins else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gofannon", description="Gofannon agent platform kernel")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP API")
    serve.add_argument("--host", default=None, help="bind address (default GOFANNON_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default GOFANNON_PORT or 8000)")
    serve.add_argument("--workers", default=None,
                       help="API processes on the port, supervised (default GOFANNON_WORKERS or 1; auto = one per core)")
    serve.add_argument("--metrics-port", type=int, default=None,
                       help="also serve /metrics on this port, without auth (keep the port private)")
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)  # a supervised child
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="run an RQ worker for chat tickets and agent runs (needs REDIS_URL)")
    worker.add_argument("--burst", action="store_true", help="exit when the queue is empty")
    worker.add_argument("--name", default=None, help="worker name")
    worker.add_argument("--concurrency", type=int, default=None,
                        help="jobs this process runs at once (default GOFANNON_JOB_CONCURRENCY)")
    worker.add_argument("--grace", type=float, default=30.0,
                        help="seconds a stopping worker lets running jobs finish (default 30)")
    worker.add_argument("--metrics-port", type=int, default=None,
                        help="serve this worker's /metrics on this port, without auth (keep the port private)")
    worker.add_argument("--metrics-host", default=None, help="address of --metrics-port (default GOFANNON_HOST)")
    worker.set_defaults(func=cmd_worker)

    plugins = sub.add_parser("plugins", help="list plugins: name, version, hooks, load errors")
    plugins.add_argument("--json", action="store_true")
    plugins.set_defaults(func=cmd_plugins)

    try:
        from gofannon.store.cli import add_store_commands
    except ImportError:  # pragma: no cover - store tools not installed
        pass
    else:
        add_store_commands(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    # Start-up creates ~50,000 objects that live as long as the process and little garbage; with the collector
    # on, it runs ~120 times before the first request, once over all of them (~45 ms of a ~0.6 s `serve` start).
    # `serve` turns it back on when the app is up (_collect_from_now_on), every other command right away.
    gc.disable()
    try:
        from gofannon.plugins import PluginLoadError

        args = build_parser().parse_args(argv)
        if args.func is not cmd_serve:
            gc.enable()
        try:
            return int(args.func(args) or 0)
        except PluginLoadError as exc:  # strict mode: the operator's to fix, so say what, not where
            print(f"gofannon {args.command}: {exc}", file=sys.stderr)
            return 1
    finally:
        gc.enable()


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
