"""The scope of a bearer token, checked in one place for ``/v1``, ``/rest``, ``/mcp`` and every other route that
calls a model (chat tickets, code generation, demos, run-code: ``check_model`` and ``direct``).

``Identity.token`` (filled by ``gofannon.services.tokens.resolve``) may carry ``expiresAt``, ``models``,
``rpm`` and ``maxSpend``. ``admit`` answers whether this call may start at all: expired → 401, a model the
token may not use → 403, over its requests per minute → 429 ``rate_limit_exceeded`` with ``Retry-After``
(counted in the shared store, so every API process agrees).

``maxSpend`` must hold under concurrency, so a call does not just compare the spend so far with the limit
(200 calls would all see the same spend and all go through). Instead each call *reserves* an upper bound of
its cost on the token's document before it starts — one compare-and-set ``store.update`` that refuses
when ``spend + reserved + estimate`` would pass ``maxSpend`` — and *settles* to the real cost when it ends
(or releases the reservation when it fails). The estimate rule is in ``estimate_cost``. A reservation
carries a deadline, so one left behind by a process that died stops counting after it.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gofannon.errors import Forbidden, TooManyRequests, Unauthorized
from gofannon.ids import random_hex
from gofannon.services import ratelimit
from gofannon.services.tokens import COLLECTION, expired

if TYPE_CHECKING:  # pragma: no cover
    from gofannon.auth import Identity
    from gofannon.kernel import Kernel

#: Output tokens reserved for a call that sets no ``max_tokens`` when the catalog knows no output limit.
DEFAULT_OUTPUT_TOKENS = 4096
#: Tokens a chat message costs besides its text (role markers), for the input upper bound.
PER_MESSAGE_TOKENS = 8
#: How long past the call's own timeout a reservation keeps counting (a call that outlives it is settled anyway).
RESERVATION_GRACE_S = 120.0
_EPS = 1e-12


class TokenExpired(Unauthorized):
    openai_code = "invalid_api_key"

    def __init__(self) -> None:
        super().__init__("API token expired", reason="token_expired")


class ModelNotAllowed(Forbidden):
    openai_code = "model_not_allowed"


class TokenRateLimited(TooManyRequests):
    openai_type = "requests"
    openai_code = "rate_limit_exceeded"


class TokenBudgetExhausted(TooManyRequests):
    openai_type = "insufficient_quota"
    openai_code = "insufficient_quota"


def allows(patterns: list[str] | None, model_id: str) -> bool:
    """Whether a token's ``models`` admits ``model_id``: an exact id, or a prefix ending in ``*``."""
    if patterns is None:
        return True
    for pattern in patterns:
        if pattern.endswith("*") and model_id.startswith(pattern[:-1]) or pattern == model_id:
            return True
    return False


def models_only(ident: "Identity") -> bool:
    """Whether the caller's token is limited to ``models``: it may call them and read, and change nothing else."""
    token = ident.token
    return token is not None and token.get("models") is not None


def may_use(ident: "Identity", model_id: str) -> bool:
    """``allows`` for a caller (True for sessions and unscoped tokens): what ``GET /v1/models`` lists."""
    token = ident.token
    return token is None or allows(token.get("models"), model_id)


def check_model(ident: "Identity", model_id: str) -> None:
    """403 ``model_not_allowed`` when the caller's token may not use ``model_id`` (``provider/model`` or
    ``agent/<name>``). For the calls the token's holder chooses outside ``/v1``, ``/rest`` and ``/mcp``: chat
    tickets, code generation, demos, and the code run by run-code (its ``call_llm`` and the agents it calls)."""
    if not may_use(ident, model_id):
        raise ModelNotAllowed(f"This API token may not use the model '{model_id}'.")


async def admit(kernel: "Kernel", ident: "Identity", model_id: str) -> None:
    """Refuse a call the caller's token does not allow: expiry (401), model (403), rpm (429 + Retry-After)."""
    token = ident.token
    if not token:
        return
    if expired(token.get("expiresAt")):
        raise TokenExpired()
    check_model(ident, model_id)
    rpm = token.get("rpm")
    if rpm and token.get("id"):
        if not await ratelimit.admit(kernel, f"token-rpm:{token['id']}", int(rpm), 60.0):
            retry = max(1, math.ceil(60.0 - time.time() % 60.0))
            raise TokenRateLimited(f"This API token is limited to {rpm} requests per minute; retry in {retry} s.",
                                   headers={"Retry-After": str(retry)})


# -- spend ----------------------------------------------------------------------------------------------
def estimate_cost(price: dict[str, Any] | None, messages: Any, tools: Any, max_tokens: int | None,
                  model_max_output: int | None) -> float:
    """An upper bound of a call's cost, reserved before it starts.

    Input: one token per UTF-8 byte of the messages and tools as JSON, plus ``PER_MESSAGE_TOKENS`` per
    message (byte-level tokenizers never make more tokens than bytes). Output: the call's ``max_tokens``,
    else the model's output limit from the catalog, else ``DEFAULT_OUTPUT_TOKENS`` — the one case where a
    call can cost more than it reserved. An unpriced model reserves 0.
    """
    if not price:
        return 0.0
    try:
        inp = float(price.get("input_cost_per_token") or 0.0)
        out = float(price.get("output_cost_per_token") or 0.0)
    except (TypeError, ValueError):
        return 0.0
    raw = json.dumps([messages, tools], ensure_ascii=False, separators=(",", ":"), default=str).encode()
    input_tokens = len(raw) + PER_MESSAGE_TOKENS * (len(messages) if isinstance(messages, list) else 1)
    output_tokens = max_tokens or model_max_output or DEFAULT_OUTPUT_TOKENS
    cost = input_tokens * max(inp, 0.0) + int(output_tokens) * max(out, 0.0)
    return cost if math.isfinite(cost) else 0.0


def estimate_for(provider: str, model: str, messages: Any, tools: Any, max_tokens: Any) -> float:
    """``estimate_cost`` with the model's prices and output limit from the active catalog."""
    from gofannon.llm import catalog

    cat = catalog.active()
    price = cat.price(provider, model)
    limit = (cat.model(provider, model) or {}).get("max_output_tokens") or (price or {}).get("max_output_tokens")
    return estimate_cost(price, messages, tools, _int_or_none(max_tokens), _int_or_none(limit))


def _int_or_none(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


async def metered(kernel: "Kernel", ident: "Identity", provider: str, model: str, messages: Any, tools: Any,
                  max_tokens: Any, call: Any) -> Any:
    """Run ``call()`` (an LLM call costing ``.cost``) against the caller's token budget: reserved before,
    settled after, released on failure. Without a token ``maxSpend`` it just runs. LLM calls an agent makes
    while it runs for a token's call (``/v1``, ``/rest``, ``/mcp``) go through this, so they count too."""
    if spend_limited(ident) is None:
        return await call()
    reservation = await reserve(kernel, ident, estimate_for(provider, model, messages, tools, max_tokens))
    try:
        result = await call()
    except BaseException:
        try:
            await release(kernel, reservation)
        except Exception:  # noqa: BLE001 - the reservation expires on its own; the call's error matters more
            pass
        raise
    await settle(kernel, reservation, float(getattr(result, "cost", 0.0) or 0.0))
    return result


async def direct(kernel: "Kernel", ident: "Identity", provider: str, model: str, messages: Any, tools: Any,
                 max_tokens: Any, call: Any) -> Any:
    """An LLM call whose model the caller chose (chat tickets, code generation, demos, run-code's own code):
    the token's ``models`` must allow ``provider/model`` (403), and it is ``metered`` against its ``maxSpend``."""
    check_model(ident, f"{provider}/{model}")
    return await metered(kernel, ident, provider, model, messages, tools, max_tokens, call)


@dataclass
class Reservation:
    token_id: str
    reservation_id: str
    amount: float


def _live(doc: dict[str, Any], now: float) -> dict[str, list[float]]:
    held = doc.get("reservations")
    if not isinstance(held, dict):
        return {}
    return {k: v for k, v in held.items() if isinstance(v, list) and len(v) == 2 and float(v[1]) > now}


def spend_limited(ident: "Identity") -> str | None:
    """The id of the caller's token when it has a ``maxSpend`` (whose calls reserve), else None."""
    token = ident.token
    if token and token.get("maxSpend") is not None and token.get("id"):
        return str(token["id"])
    return None


async def reserve(kernel: "Kernel", ident: "Identity", estimate: float, *,
                  hold_s: float | None = None) -> Reservation | None:
    """Reserve ``estimate`` USD of the caller's token budget; None when the token has no ``maxSpend``.
    429 ``insufficient_quota`` when the spend so far plus what running calls reserved plus ``estimate``
    would pass ``maxSpend`` (or the spend already reached it)."""
    token_id = spend_limited(ident)
    if token_id is None:
        return None
    estimate = max(0.0, float(estimate))
    res_id = random_hex(8)
    hold = float(hold_s if hold_s is not None else kernel.settings.llm_timeout_seconds + RESERVATION_GRACE_S)
    refused: list[str] = []

    def fn(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        refused.clear()
        if doc is None:
            refused.append("This API token was revoked.")
            return None
        now = time.time()
        limit = float(doc.get("maxSpend") or 0.0)
        spend = float(doc.get("spend") or 0.0)
        held = _live(doc, now)
        reserved = sum(float(v[0]) for v in held.values())
        if spend >= limit - _EPS or spend + reserved + estimate > limit + _EPS:
            left = max(0.0, limit - spend)
            refused.append(
                f"This API token's budget is used up: it has spent ${spend:.6f} of ${limit:.6f}" if left <= _EPS else
                f"This API token's remaining budget (${left:.6f}, ${reserved:.6f} of it held by calls in progress) "
                f"does not cover this call's estimated cost (${estimate:.6f}); set a lower max_tokens")
            return None
        held[res_id] = [estimate, now + hold]
        doc["reservations"] = held
        return doc

    reservation = Reservation(token_id, res_id, estimate)
    update = asyncio.ensure_future(kernel.store.update(COLLECTION, token_id, fn))
    try:
        await asyncio.shield(update)
    except asyncio.CancelledError:  # the caller went away while the store was writing: give it back after
        kernel.spawn(_release_after(kernel, update, reservation, refused), name="scopes.release")
        raise
    if refused:
        raise TokenBudgetExhausted(refused[0])
    return reservation


async def _release_after(kernel: "Kernel", update: "asyncio.Future[Any]", reservation: Reservation,
                         refused: list[str]) -> None:
    try:
        await update
    except Exception:  # noqa: BLE001 - nothing was reserved
        return
    if not refused:
        await release(kernel, reservation)


async def check_budget(kernel: "Kernel", ident: "Identity") -> None:
    """429 ``insufficient_quota`` when the caller's token has no budget left (for calls of unknown cost)."""
    await release(kernel, await reserve(kernel, ident, 0.0))


async def settle(kernel: "Kernel", reservation: Reservation | None, cost: float) -> None:
    """Replace a reservation by the call's real cost (added to the token's ``spend``)."""
    if reservation is None:
        return
    cost = max(0.0, float(cost)) if math.isfinite(float(cost)) else 0.0

    def fn(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None:
            return None
        held = _live(doc, time.time())
        held.pop(reservation.reservation_id, None)
        doc["reservations"] = held
        doc["spend"] = float(doc.get("spend") or 0.0) + cost
        return doc

    await asyncio.shield(kernel.store.update(COLLECTION, reservation.token_id, fn))


async def release(kernel: "Kernel", reservation: Reservation | None) -> None:
    """Drop a reservation of a call that failed before it cost anything."""
    if reservation is None:
        return

    def fn(doc: dict[str, Any] | None) -> dict[str, Any] | None:
        if doc is None or reservation.reservation_id not in (doc.get("reservations") or {}):
            return None
        held = _live(doc, time.time())
        held.pop(reservation.reservation_id, None)
        doc["reservations"] = held
        return doc

    await asyncio.shield(kernel.store.update(COLLECTION, reservation.token_id, fn))
