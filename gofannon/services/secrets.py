"""The server's secret key and what is derived from it: encryption of stored provider keys, HMAC.

The master key comes from ``GOFANNON_SECRET_KEY``; when that is unset it is generated once into the store
collection ``kernel_secrets`` (create-only write, so concurrent first starts agree on one key) and every
process sharing the store reads the same one. Purpose-specific keys are derived from it, so a leak of one
derived key does not expose the others.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets as _random
from typing import TYPE_CHECKING, Any

from gofannon.errors import RevisionConflict
from gofannon.timeutil import now_iso

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.kernel import Kernel

COLLECTION = "kernel_secrets"
MASTER_ID = "master"
_COMPONENT = "secrets"


class Secrets:
    """Derived keys of one master key."""

    def __init__(self, master: bytes) -> None:
        self._master = master
        self._cipher: Any = None  # Fernet, made on first use: ``cryptography`` stays out of start-up and idle memory

    @property
    def _fernet(self) -> Any:
        if self._cipher is None:
            from cryptography.fernet import Fernet

            self._cipher = Fernet(base64.urlsafe_b64encode(self.derive("provider-keys")))
        return self._cipher

    def derive(self, purpose: str) -> bytes:
        """A 32-byte key for one purpose (HMAC-SHA256 of the purpose under the master key)."""
        return hmac.new(self._master, f"gofannon:{purpose}".encode(), hashlib.sha256).digest()

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode()).decode()

    def decrypt(self, token: str) -> str | None:
        """The plaintext, or None when the token was not made with this key (key rotated, data corrupt)."""
        from cryptography.fernet import InvalidToken

        try:
            return self._fernet.decrypt(token.encode()).decode()
        except (InvalidToken, ValueError, TypeError):
            return None

    def mac(self, purpose: str, data: str) -> str:
        return hmac.new(self.derive(purpose), data.encode(), hashlib.sha256).hexdigest()


async def _load_master(kernel: "Kernel") -> bytes:
    configured = kernel.settings.secret_key
    if configured:
        return hashlib.sha256(configured.encode()).digest()
    doc = await kernel.store.get(COLLECTION, MASTER_ID)
    if doc is None:
        fresh = base64.urlsafe_b64encode(_random.token_bytes(32)).decode()
        try:
            await kernel.store.put(COLLECTION, MASTER_ID, {"key": fresh, "createdAt": now_iso()}, rev=None)
        except RevisionConflict:
            pass  # another process created it first: use theirs
        doc = await kernel.store.get(COLLECTION, MASTER_ID)
    if doc is None or not isinstance(doc.get("key"), str):
        raise RuntimeError(f"store collection {COLLECTION!r} holds no usable master key")
    return base64.urlsafe_b64decode(doc["key"].encode())


async def start(kernel: "Kernel") -> None:
    master = await _load_master(kernel)
    kernel.component(_COMPONENT, lambda: Secrets(master))


def get(kernel: "Kernel") -> Secrets:
    """The kernel's secrets; the service must have started (``Kernel.open``)."""
    if not kernel.has_component(_COMPONENT):
        raise RuntimeError("secrets service not started (Kernel.open() must run first)")
    return kernel.component(_COMPONENT, lambda: Secrets(b""))


def encrypt(kernel: "Kernel", plaintext: str) -> str:
    return get(kernel).encrypt(plaintext)


def decrypt(kernel: "Kernel", token: str) -> str | None:
    return get(kernel).decrypt(token)
