"""Demo console accounts for ``pathway demo``: an IG officer, a partnership lead, and a DPO and a
senior officer for the HSCP and for Tayview House."""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Any

import orjson

from gateway.console.auth import DPO, IG_OFFICER, PARTNERSHIP_LEAD, SENIOR_OFFICER, save_account
from gateway.runtime import Gateway
from gateway.store.crypto import write_owner_only
from gateway.store.models import ClientRow

# username -> (display name, roles, registered client whose organisation and writes it uses)
DEMO_ACCOUNTS = {
    "ig-officer": ("Morven Laird (IG officer, demo)", [IG_OFFICER], "ig-officer"),
    "partnership-lead": ("Callum Rennie (partnership lead, demo)", [PARTNERSHIP_LEAD], "ig-officer"),
    "hscp-dpo": ("Ewan Baird (HSCP data protection officer, demo)", [DPO], "ig-officer"),
    "hscp-senior-officer": ("Fiona Reid (HSCP chief social work officer, demo)", [SENIOR_OFFICER], "ig-officer"),
    "tayview-dpo": ("Lorna Keir (Tayview House data protection officer, demo)", [DPO], "rehab-facility"),
    "tayview-senior-officer": ("Graham Orr (Tayview House registered manager, demo)", [SENIOR_OFFICER], "rehab-facility"),
}


def create_demo_accounts(gateway: Gateway, out_dir: Path) -> dict[str, Any]:
    """Create (or reset) the demo console accounts with fresh random passwords, written to
    ``out_dir/console-accounts.json`` (owner-only); returns what was written."""
    accounts: dict[str, Any] = {}
    with gateway.transaction() as session:
        for username, (display_name, roles, client_id) in DEMO_ACCOUNTS.items():
            client = session.get(ClientRow, client_id)
            if client is None:
                raise LookupError(f"console account {username} needs the client {client_id} from conf/partners.yaml; load the configuration first")
            password = secrets.token_urlsafe(12)
            save_account(session, username, display_name=display_name, organization=client.organization, roles=roles, client_id=client_id, password=password)
            accounts[username] = {"password": password, "roles": roles, "organization": client.organization}
    path = out_dir / "console-accounts.json"
    write_owner_only(path, orjson.dumps({"console": "/console/", "accounts": accounts}, option=orjson.OPT_INDENT_2))
    return {"file": str(path), "path": "/console/", "accounts": accounts}
