"""Import a reference deployment's data from its CouchDB export.

The input is what ``GET /<db>/_all_docs?include_docs=true`` answers, one JSON file per database (the
database name is the file name up to its first dot: ``agents.json``), or a directory of such files.
``{"docs": [...]}`` and a bare list of documents are accepted too. Ids are kept, CouchDB's ``_rev`` is
dropped (the target store assigns its own), design documents are skipped.

What changes on the way in, because this project differs from the reference (DECISIONS.md):
- agents, deployments, demos, chat tickets, chat-settings sessions and run records get an ``ownerId``
  (the reference had none: the site admin named with ``--owner`` owns them; an existing one is kept);
- provider keys found in clear in a user's ``apiKeys`` are encrypted with the kernel's secrets service
  and only their masked form stays visible, exactly as ``PUT /users/me/api-keys`` stores them;
- a user's usage history moves to the ``usage`` collection (one document per entry); the user document
  keeps the recent entries, as the users service does;
- login sessions (``user_sessions``) are not imported: they belong to the old deployment's cookies.

Importing twice writes nothing the second time (documents equal to the stored ones are left alone).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gofannon.store.specs import SpecError, make_kernel, spec_env

OWNED = ("agents", "deployments", "demos", "tickets", "sessions", "gofannon_runs")
KEPT = ("users", "agent_data_store", *OWNED)
SKIPPED = {"user_sessions": "login sessions of the old deployment (users sign in again)"}
OWNER_FIELD = "ownerId"
USAGE = "usage"
ENCRYPTED = "encryptedApiKeys"


class ImportError_(Exception):
    """An export the importer cannot read."""


@dataclass
class Counts:
    read: int = 0
    new: int = 0
    changed: int = 0
    unchanged: int = 0


@dataclass
class ImportReport:
    dry_run: bool
    target: str
    collections: dict[str, Counts] = field(default_factory=dict)
    keys_encrypted: int = 0
    usage_moved: int = 0
    notes: list[str] = field(default_factory=list)

    def counts(self, name: str) -> Counts:
        return self.collections.setdefault(name, Counts())

    def render(self) -> str:
        verb = "would be" if self.dry_run else "were"
        lines = [("DRY RUN: nothing written. " if self.dry_run else "") + f"import into {self.target}"]
        for name, c in self.collections.items():
            lines.append(f"  {name:<20} {c.read:>6} read: {c.new} new, {c.changed} changed, {c.unchanged} unchanged")
        lines.append(f"  provider keys that {verb} encrypted: {self.keys_encrypted}")
        lines.append(f"  usage entries that {verb} moved to '{USAGE}': {self.usage_moved}")
        lines += [f"  note: {n}" for n in self.notes]
        return "\n".join(lines) + "\n"


# -- reading the export ----------------------------------------------------------------------------------------
def database_name(path: Path) -> str:
    return path.name.split(".", 1)[0]


def read_export(path: Path) -> dict[str, list[dict[str, Any]]]:
    """``{database: [documents]}`` from one export file or a directory of them."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix == ".json")
        if not files:
            raise ImportError_(f"{path}: no .json export files in this directory")
    elif path.is_file():
        files = [path]
    else:
        raise ImportError_(f"{path}: no such file or directory")
    out: dict[str, list[dict[str, Any]]] = {}
    for file in files:
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ImportError_(f"{file}: not a JSON export ({exc})") from None
        out.setdefault(database_name(file), []).extend(_documents(file, data))
    return out


def _documents(file: Path, data: Any) -> Iterable[dict[str, Any]]:
    if isinstance(data, dict) and isinstance(data.get("rows"), list):
        for row in data["rows"]:
            if not isinstance(row, dict) or "error" in row:
                continue
            doc = row.get("doc")
            if doc is None and "id" in row:
                raise ImportError_(f"{file}: rows carry no documents; export with _all_docs?include_docs=true")
            if isinstance(doc, dict):
                yield doc
        return
    docs = data.get("docs") if isinstance(data, dict) else data
    if not isinstance(docs, list):
        raise ImportError_(f"{file}: expected CouchDB's _all_docs answer ({{\"rows\": [...]}}) or a list of documents")
    yield from (d for d in docs if isinstance(d, dict))


# -- mapping to ours ------------------------------------------------------------------------------------------
def _usage_id(uid: str, index: int, entry: dict[str, Any]) -> str:
    digest = hashlib.sha256(json.dumps([index, entry], sort_keys=True, default=str).encode()).hexdigest()[:8]
    return f"{uid}:{entry.get('timestamp')}:{digest}"


def _map_user(doc: dict[str, Any], existing: dict[str, Any] | None, secrets: Any, report: ImportReport,
              usage_out: list[dict[str, Any]]) -> dict[str, Any]:
    from gofannon.services.users import KEY_PROVIDERS, RECENT_USAGE, key_field, mask
    from gofannon.timeutil import now_iso

    uid = doc["_id"]
    keys = dict(doc.get("apiKeys") or {}) if isinstance(doc.get("apiKeys"), dict) else {}
    encrypted = dict(doc.get(ENCRYPTED) or {})
    old_encrypted = (existing or {}).get(ENCRYPTED) or {}
    for provider in KEY_PROVIDERS:
        name = key_field(provider)
        clear = keys.get(name)
        if not isinstance(clear, str) or not clear:
            continue
        keys[name] = None
        report.keys_encrypted += 1
        previous = old_encrypted.get(provider)
        if (secrets is not None and isinstance(previous, dict) and isinstance(previous.get("ciphertext"), str)
                and secrets.decrypt(previous["ciphertext"]) == clear):
            encrypted[provider] = previous  # already imported: keep it, so a re-import changes nothing
        elif secrets is not None:
            encrypted[provider] = {"ciphertext": secrets.encrypt(clear), "masked": mask(clear), "updatedAt": now_iso()}
        else:  # dry run before the store has a key: the shape is what matters for the report
            encrypted[provider] = {"ciphertext": None, "masked": mask(clear)}
    doc["apiKeys"] = {**{key_field(p): None for p in KEY_PROVIDERS}, **keys}
    if encrypted:
        doc[ENCRYPTED] = encrypted
    info = doc.get("usageInfo")
    if isinstance(info, dict) and isinstance(info.get("usage"), list):
        entries = [e for e in info["usage"] if isinstance(e, dict)]
        for index, entry in enumerate(entries):
            usage_out.append({"_id": _usage_id(uid, index, entry), "userId": uid,
                              "timestamp": entry.get("timestamp"), "responseCost": entry.get("responseCost"),
                              "metadata": entry.get("metadata")})
        report.usage_moved += len(entries)
        info["usage"] = entries[-RECENT_USAGE:]
    return doc


def _strip(doc: dict[str, Any] | None) -> dict[str, Any] | None:
    return None if doc is None else {k: v for k, v in doc.items() if k != "_rev"}


# -- the command ------------------------------------------------------------------------------------------------
async def import_reference(path: Path, *, owner: str, target_spec: str = "configured",
                           dry_run: bool = False) -> ImportReport:
    if not owner.strip():
        raise ImportError_("--owner must name the uid of a site admin")
    export = read_export(path)
    try:
        kernel = make_kernel(spec_env(target_spec))
    except SpecError as exc:
        raise ImportError_(str(exc)) from None
    from gofannon.services import secrets as secrets_service

    kernel.store = kernel.open_store()
    await kernel.store.open()
    report = ImportReport(dry_run=dry_run, target=target_spec)
    try:
        secrets = None
        if not dry_run or kernel.settings.secret_key or await kernel.store.get(
                secrets_service.COLLECTION, secrets_service.MASTER_ID):
            await secrets_service.start(kernel)
            secrets = secrets_service.get(kernel)
        pending: dict[str, list[dict[str, Any]]] = {}
        for db, docs in export.items():
            if db in SKIPPED:
                report.notes.append(f"{db}: {len(docs)} skipped, {SKIPPED[db]}")
                continue
            if db not in KEPT:
                report.notes.append(f"{db}: {len(docs)} skipped, not a reference database this kernel uses")
                continue
            docs = [d for d in docs if isinstance(d.get("_id"), str) and not d["_id"].startswith("_design/")]
            existing = await kernel.store.get_many(db, [d["_id"] for d in docs])
            bucket = pending.setdefault(db, [])
            for raw in docs:
                doc = {k: v for k, v in raw.items() if k not in ("_rev", "_revisions", "_conflicts", "_attachments")}
                if db in OWNED:
                    _map_workspace(doc)
                    doc.setdefault(OWNER_FIELD, owner)
                if db == "users":
                    doc = _map_user(doc, existing.get(doc["_id"]), secrets, report, pending.setdefault(USAGE, []))
                bucket.append(doc)
        for db, docs in pending.items():
            counts = report.counts(db)
            existing = await kernel.store.get_many(db, [d["_id"] for d in docs])
            changed: list[dict[str, Any]] = []
            for doc in docs:
                counts.read += 1
                before = _strip(existing.get(doc["_id"]))
                if before is None:
                    counts.new += 1
                elif before != _strip(doc):
                    counts.changed += 1
                else:
                    counts.unchanged += 1
                    continue
                changed.append(doc)
            if changed and not dry_run:
                for start in range(0, len(changed), 500):
                    await kernel.store.put_many(db, changed[start:start + 500])
        if not any(d.get("_id") == owner for d in export.get("users", [])) and await kernel.store.get(
                "users", owner) is None:
            report.notes.append(f"owner {owner!r} has no user document yet; it is created when they first sign in")
    finally:
        await kernel.close()
    return report


def _map_workspace(doc: dict[str, Any]) -> None:
    """The reference's workspace fields (docs/workspaces.md): ``workspace_id`` becomes ``workspaceId``; a
    document of someone's personal workspace (``personal:<uid>``) is owned by that person rather than by
    ``--owner`` and needs no ``workspaceId``; any other workspace id is kept as the document's workspace."""
    workspace_id = doc.pop("workspace_id", None)
    if workspace_id and not doc.get("workspaceId"):
        doc["workspaceId"] = workspace_id
    workspace_id = doc.get("workspaceId")
    if not isinstance(workspace_id, str) or not workspace_id:
        doc.pop("workspaceId", None)
        return
    person = workspace_id[len("personal:"):] if workspace_id.startswith("personal:") else ""
    if person:
        doc.setdefault(OWNER_FIELD, person)
        if doc[OWNER_FIELD] == person:
            del doc["workspaceId"]  # its owner's personal workspace is what no workspaceId means
