"""Field types of the config: each an annotated type whose validator says, in the words
a config author needs, what is wrong with a value (the key path is added by the caller).
"""

from __future__ import annotations

import base64
import binascii
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from eth_account import Account
from pydantic import AfterValidator, BeforeValidator, Field, SecretStr, ValidationInfo

from gateway.domain.ids import PhoneNumber, WalletAddress
from gateway.domain.phones import is_country_code, parse_phone
from gateway.domain.rules import ALIAS_PATTERN, normalize_address
from gateway.errors import BadRequest


def _e164(value: str) -> PhoneNumber:
    try:
        return parse_phone(value)
    except BadRequest as exc:
        raise ValueError(str(exc)) from None


def _wallet(value: str) -> WalletAddress:
    wallet = normalize_address(value)
    if wallet is None:
        if re.fullmatch(r"0[xX][0-9a-fA-F]{40}", value):
            raise ValueError("wallet address has a wrong EIP-55 checksum (a typo?)")
        raise ValueError("not a wallet address (0x and 40 hex digits)")
    return wallet


def _wallet_or_alias(value: str) -> str:
    if value.lower().startswith("0x"):
        return _wallet(value)
    return _alias(value)


def _alias(value: str) -> str:
    alias = value.lstrip("@").lower()
    if not ALIAS_PATTERN.fullmatch(alias):
        raise ValueError("an alias is 1-32 of a-z, 0-9, '_', '.', '-', starting with a "
                         "letter or digit")
    return alias


def _country(value: str) -> str:
    code = value.upper()
    if not is_country_code(code):
        raise ValueError(f"not an ISO 3166 country code with phone numbers: {value!r}")
    return code


def _prefix(value: str) -> str:
    if not re.fullmatch(r"\+\d{1,15}", value):
        raise ValueError("a number prefix is '+' and 1 to 15 digits, e.g. +44 or +1555")
    return value


def _private_key(value: SecretStr) -> SecretStr:
    text = value.get_secret_value()
    if not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", text):
        raise ValueError("not a private key (0x and 64 hex digits)")
    try:
        Account.from_key(text)
    except ValueError:
        raise ValueError("not a valid secp256k1 private key") from None
    return SecretStr(text if text.startswith("0x") else "0x" + text)


def _key_bytes(value: SecretStr) -> SecretStr:
    try:
        raw = base64.b64decode(value.get_secret_value(), validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("not base64") from None
    if len(raw) != 32:
        raise ValueError(f"must decode to 32 bytes, not {len(raw)}")
    return value


def _hex32(value: SecretStr) -> SecretStr:
    if not re.fullmatch(r"(0x)?[0-9a-fA-F]{64}", value.get_secret_value()):
        raise ValueError("must be 64 hex digits (32 bytes)")
    return value


def _url(value: str) -> str:
    if not re.fullmatch(r"https?://[^\s/?#]+(/[^\s?#]*)?", value):
        raise ValueError("not an http(s) URL without query or fragment")
    return value.rstrip("/")


E164 = Annotated[str, AfterValidator(_e164)]
Wallet = Annotated[str, AfterValidator(_wallet)]
WalletOrAlias = Annotated[str, AfterValidator(_wallet_or_alias)]
Alias = Annotated[str, AfterValidator(_alias)]
Country = Annotated[str, AfterValidator(_country)]
Prefix = Annotated[str, AfterValidator(_prefix)]
PrivateKey = Annotated[SecretStr, AfterValidator(_private_key)]
DatabaseKey = Annotated[SecretStr, AfterValidator(_key_bytes)]
Hex32Key = Annotated[SecretStr, AfterValidator(_hex32)]
HttpUrl = Annotated[str, AfterValidator(_url)]
Port = Annotated[int, Field(ge=0, le=65535)]
Positive = Annotated[float, Field(gt=0)]
LogLevel = Annotated[Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
                     BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v)]


def data_path(value: Any, info: ValidationInfo) -> Any:
    """Relative paths live under data_dir (given in the validation context)."""
    if not isinstance(value, str | Path):
        return value  # the Path validation that follows names the problem
    path = Path(value).expanduser()
    data_dir = (info.context or {}).get("data_dir")
    if not path.is_absolute() and data_dir is not None:
        path = Path(data_dir) / path
    return path



def address_of(key: SecretStr) -> WalletAddress:
    return WalletAddress(Account.from_key(key.get_secret_value()).address)


DataPath = Annotated[Path, BeforeValidator(data_path)]
