"""A minimal valid config mapping for the config tests to break one key at a time."""

from __future__ import annotations

import base64
import copy
from typing import Any

DB_KEY = base64.b64encode(bytes(range(32))).decode()
WALLET_KEY = "0x" + "11" * 32
XMTP_DB_KEY = "22" * 32
ACCOUNT_SID = "AC" + "0123456789abcdef" * 2
AUTH_TOKEN = "f3b1a2c4d5e6f708192a3b4c5d6e7f80"
ALICE = "0xAb5801a7D398351b8bE11C439e05C5B3259aeC9B"
BOB = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"

_MINIMAL: dict[str, Any] = {
    "database": {"encryption_keys": {"k1": DB_KEY}, "active_key": "k1"},
    "twilio": {"account_sid": ACCOUNT_SID, "auth_token": AUTH_TOKEN},
    "xmtp": {"env": "local", "node_url": "http://127.0.0.1:5556", "wallet_key": WALLET_KEY,
             "db_encryption_key": XMTP_DB_KEY},
    "directory": {"alice": ALICE},
    "rules": [
        {"name": "support", "proxy": "+15550100001", "wallets": ["alice", BOB]},
        {"name": "dial", "proxy": "+15550100002", "mode": "dial"},
    ],
}


def minimal() -> dict[str, Any]:
    return copy.deepcopy(_MINIMAL)
