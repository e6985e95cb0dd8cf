"""``gofannon store ...``: move documents between stores, import a reference deployment's export.

A *store spec* names a store on the command line; it becomes the settings the storage plugin is built
from, so every installed storage plugin works here as it does under ``gofannon serve``:

============================  ======================================================================
``sqlite:DIR``                the SQLite store of data directory DIR (``DIR/gofannon.sqlite3``)
``postgres://...``            PostgreSQL at that URL (also ``postgresql://`` and ``postgresql+asyncpg://``)
``redis://...``               the Redis store at that URL (also ``rediss://`` and ``unix://``)
``memory:``                   an empty in-process store (useful only as a target for trying things out)
``configured``                the store the current settings select (``GOFANNON_STORAGE`` and friends)
``NAME:``                     the storage plugin NAME, configured from the current settings
============================  ======================================================================
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from gofannon.store.specs import SpecError, describe, opened_store, spec_env

__all__ = ["SpecError", "add_store_commands", "copy_store", "describe", "opened_store", "spec_env"]

BATCH = 500


# -- copy ---------------------------------------------------------------------------------------------------
@dataclass
class CollectionReport:
    name: str
    source: int = 0
    written: int = 0
    unchanged: int = 0
    pruned: int = 0
    target: int = 0

    @property
    def ok(self) -> bool:
        return self.target == self.source


@dataclass
class CopyReport:
    collections: list[CollectionReport] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.collections)


def _content(doc: Mapping[str, Any] | None) -> dict[str, Any] | None:
    return None if doc is None else {k: v for k, v in doc.items() if k != "_rev"}


class Progress:
    """A one-line progress bar on a terminal; silent elsewhere (logs get the per-collection lines)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = bool(getattr(stream, "isatty", lambda: False)())

    def update(self, label: str, done: int, total: int) -> None:
        if not self.live:
            return
        width = 30
        filled = width if total == 0 else int(width * done / total)
        self.stream.write(f"\r{label:<20} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        self.stream.flush()

    def finish(self) -> None:
        if self.live:
            self.stream.write("\r" + " " * 70 + "\r")
            self.stream.flush()


async def copy_store(source: Any, target: Any, *, collections: list[str] | None = None, prune: bool = False,
                     progress: Callable[[str, int, int], None] | None = None) -> CopyReport:
    """Copy every document of every (or the named) collections; documents already equal in the target are
    left alone, so running it again writes nothing. A target that offers ``restore_many`` keeps the
    source's revisions (clients holding a ``_rev`` can still write); others assign their own."""
    names = collections if collections is not None else await source.collections()
    restore = getattr(target, "restore_many", None)
    same = (lambda a, b: a == b) if restore else (lambda a, b: _content(a) == _content(b))
    write = restore or target.put_many
    report = CopyReport()
    for name in names:
        docs = await source.list(name)
        item = CollectionReport(name, source=len(docs))
        for start in range(0, len(docs), BATCH):
            chunk = docs[start:start + BATCH]
            existing = await target.get_many(name, [d["_id"] for d in chunk])
            changed = [d for d in chunk if not same(existing.get(d["_id"]), d)]
            if changed:
                await write(name, changed)
            item.written += len(changed)
            item.unchanged += len(chunk) - len(changed)
            if progress:
                progress(name, start + len(chunk), len(docs))
        if progress and not docs:
            progress(name, 0, 0)
        if prune:
            wanted = {d["_id"] for d in docs}
            extra = [d["_id"] for d in await target.list(name) if d["_id"] not in wanted]
            item.pruned = await target.delete_many(name, extra) if extra else 0
        item.target = await target.count(name)
        report.collections.append(item)
    return report


async def run_copy(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    if spec_env(args.source) == spec_env(args.target):
        err.write("error: --from and --to name the same store\n")
        return 2
    only = [c.strip() for c in args.collections.split(",") if c.strip()] if args.collections else None
    bar = Progress(err)
    async with opened_store(args.source, must_exist=True) as source, opened_store(args.target) as target:
        out.write(f"copying {describe(args.source)} -> {describe(args.target)}\n")
        report = await copy_store(source, target, collections=only, prune=args.prune, progress=bar.update)
    bar.finish()
    total = 0
    for c in report.collections:
        total += c.source
        status = "ok" if c.ok else f"MISMATCH: target holds {c.target}"
        extra = f", {c.pruned} pruned" if c.pruned else ""
        out.write(f"  {c.name:<20} {c.source:>8} documents ({c.written} written, {c.unchanged} unchanged{extra})"
                  f"  {status}\n")
    if report.ok:
        out.write(f"verified: {len(report.collections)} collections, {total} documents, counts match\n")
        return 0
    out.write("verification FAILED: the target's counts differ (documents that exist only in the target stay;"
              " rerun with --prune to remove them)\n")
    return 1


async def run_import(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from gofannon.store.reference_import import ImportError_, import_reference

    try:
        report = await import_reference(Path(args.path), owner=args.owner, target_spec=args.to,
                                        dry_run=args.dry_run)
    except ImportError_ as exc:
        err.write(f"error: {exc}\n")
        return 2
    out.write(report.render())
    return 0


async def run_migrate(args: argparse.Namespace, out: TextIO, err: TextIO) -> int:
    from gofannon.services.workspaces import migrate_store

    async with opened_store(args.store, must_exist=True) as store:
        changed = await migrate_store(store, dry_run=args.dry_run)
    verb = "would get" if args.dry_run else "got"
    for collection, count in changed.items():
        out.write(f"  {collection:<20} {count:>8} documents {verb} their owner's personal workspaceId\n")
    return 0


# -- argparse wiring ------------------------------------------------------------------------------------------
def add_store_commands(subparsers: Any) -> None:
    store = subparsers.add_parser("store", help="copy documents between stores; import a reference deployment")
    sub = store.add_subparsers(dest="store_command", required=True)

    copy = sub.add_parser(
        "copy", help="copy every collection from one store to another (idempotent; verifies counts)",
        description="Stores: sqlite:DIR | postgres://... | redis://... | memory: | configured | NAME:",
    )
    copy.add_argument("--from", dest="source", required=True, help="store to read, e.g. sqlite:./data")
    copy.add_argument("--to", dest="target", required=True, help="store to write, e.g. postgresql://u@db/gofannon")
    copy.add_argument("--collections", default=None, help="comma-separated collections (default: all)")
    copy.add_argument("--prune", action="store_true",
                      help="delete target documents that the source lacks (in the copied collections)")
    copy.set_defaults(func=_sync(run_copy))

    imp = sub.add_parser(
        "import-reference",
        help="import a reference deployment's CouchDB export (_all_docs?include_docs=true JSON per database)",
    )
    imp.add_argument("path", help="one export file (database name = file name) or a directory of them")
    imp.add_argument("--owner", required=True, help="uid of the site admin who will own the imported documents")
    imp.add_argument("--to", default="configured", help="target store (default: the configured one)")
    imp.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
    imp.set_defaults(func=_sync(run_import))

    mig = sub.add_parser(
        "migrate",
        help="write workspaceId (the owner's personal workspace) on documents that have none (docs/workspaces.md)",
    )
    mig.add_argument("--store", default="configured", help="store to migrate (default: the configured one)")
    mig.add_argument("--dry-run", action="store_true", help="report what would change; write nothing")
    mig.set_defaults(func=_sync(run_migrate))


def _sync(fn: Callable[[argparse.Namespace, TextIO, TextIO], Any]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return int(asyncio.run(fn(args, sys.stdout, sys.stderr)))
        except SpecError as exc:
            sys.stderr.write(f"error: {exc}\n")
            return 2
        except RuntimeError as exc:  # a store that cannot be opened (no such plugin, missing setting)
            sys.stderr.write(f"error: {exc}\n")
            return 2

    return run
