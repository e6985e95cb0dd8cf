"""Deployment documents and the ``DeployedApi`` wire shape (wire contract §1.9, §2.3).

A deployment is ``deployments/<friendlyName>`` = ``{agentId, ownerId}``; the document id doubles as the
uniqueness lock on the public name (created with "create only" semantics).
"""

from __future__ import annotations

from typing import Any

DEPLOYMENTS = "deployments"


def deployed_api(name: str, agent: dict[str, Any]) -> dict[str, Any]:
    """One element of ``GET /deployments``; null schemas become ``{}`` so a list never fails (§12.16)."""
    return {
        "friendlyName": name,
        "agentId": agent["_id"],
        "description": agent.get("description") or "",
        "inputSchema": agent.get("inputSchema") or {},
        "outputSchema": agent.get("outputSchema") or {},
    }


def deploy_answer(name: str, *, already: bool) -> dict[str, str]:
    message = "Agent is already deployed" if already else "Agent deployed successfully"
    return {"message": message, "endpoint": f"/rest/{name}"}
