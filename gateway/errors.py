"""One exception tree for the whole gateway.

Adapters translate library errors (twilio, libxmtp, SQLAlchemy, grpc) into these at
their edge, so the relay and the handlers only ever catch ``GatewayError`` subclasses.
Every class carries a stable ``code`` used by the HTTP error middleware.
"""

from __future__ import annotations


class GatewayError(Exception):
    """Root of every error the gateway raises on purpose."""

    code = "gateway_error"


def first_line(exc: BaseException) -> str:
    """An error's message without what follows its first line (libxmtp appends a
    twenty-line table of API call counts to some), for logs that repeat it."""
    text = str(exc).strip()
    if not text:
        return type(exc).__name__
    first = text.splitlines()[0]
    return first if first == text else f"{first} …"


# --- configuration -------------------------------------------------------------------


class ConfigError(GatewayError):
    """The configuration is invalid. ``problems`` holds one ``(key_path, message)`` each."""

    code = "config_invalid"

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{path}: {msg}" if path else msg for path, msg in problems))


# --- running -------------------------------------------------------------------------


class DataDirInUse(GatewayError):
    """Another process holds the data directory (libxmtp's database, the embedded
    devnode's, SQLite): two processes must never share one."""

    code = "data_dir_in_use"

    def __init__(self, data_dir: str, pid: int | None) -> None:
        self.data_dir = data_dir
        self.pid = pid
        holder = f" (pid {pid})" if pid is not None else ""
        super().__init__(f"another gateway is using {data_dir}{holder}; stop it, or give "
                         "this one its own data_dir (GATEWAY_DATA_DIR in the default config)")


class DevNodeDbInUse(GatewayError):
    """Another devnode (standalone, or embedded in a gateway) has this database open."""

    code = "devnode_db_in_use"

    def __init__(self, db: str, pid: int | None) -> None:
        holder = f" (pid {pid})" if pid is not None else ""
        super().__init__(f"another devnode is using {db}{holder}; stop it, or give this "
                         "one its own database")


class CannotListen(GatewayError):
    """The server's address is taken or cannot be bound."""

    code = "cannot_listen"


# --- input ---------------------------------------------------------------------------


class BadRequest(GatewayError):
    """Input from outside (a webhook, an API call) is malformed."""

    code = "bad_request"


class InvalidSignature(GatewayError):
    """A webhook's signature is missing or wrong, or no auth token is configured."""

    code = "invalid_signature"


class NotFound(GatewayError):
    code = "not_found"


class Conflict(GatewayError):
    code = "conflict"


# --- media ---------------------------------------------------------------------------


class MediaError(GatewayError):
    """Media (an MMS picture, an XMTP attachment) could not be carried."""

    code = "media_error"


class AttachmentInvalid(MediaError):
    """An XMTP attachment that cannot be opened: its digest does not match, its
    ciphertext was altered, or its encoding is malformed. Never retried."""

    code = "attachment_invalid"


class MediaRefused(MediaError):
    """Media refused by policy before or while fetching it: a URL we must not fetch
    (scheme, private or metadata address), too many bytes, a content type not allowed.
    Retrying changes nothing."""

    code = "media_refused"


class MediaFetchFailed(MediaError):
    """Fetching media failed: the network, a timeout, or the server's answer.
    ``retryable``: a later attempt may succeed (5xx, 429, timeouts, connection errors)."""

    code = "media_fetch_failed"

    def __init__(self, message: str, *, retryable: bool, status: int | None = None) -> None:
        self.retryable = retryable
        self.status = status
        super().__init__(message)


class BlobNotFound(MediaError):
    """No stored media under this key (never stored, deleted, or past retention)."""

    code = "blob_not_found"


class BlobStoreError(MediaError):
    """The blob store failed (disk, object storage): the operation may be retried."""

    code = "blob_store_error"


# --- store ---------------------------------------------------------------------------


class StoreError(GatewayError):
    code = "store_error"


class DuplicateMessage(StoreError):
    """(source, external_id) was already recorded; ``existing_id`` is that message."""

    code = "duplicate_message"

    def __init__(self, existing_id: str) -> None:
        self.existing_id = existing_id
        super().__init__(f"message already recorded as {existing_id}")


class ActivePairConflict(StoreError):
    """The (address, proxy_address) pair is already in another active conversation."""

    code = "participant_pair_in_use"

    def __init__(self, conversation_id: str) -> None:
        self.conversation_id = conversation_id
        super().__init__(f"address/proxy pair already active in conversation {conversation_id}")


class UnknownEncryptionKey(StoreError):
    code = "unknown_encryption_key"


class LeaseLost(StoreError):
    """A worker's result for a delivery whose lease it no longer holds: the lease ran out
    and another worker (or the reconciler) may own the row now, so nothing was written."""

    code = "lease_lost"

    def __init__(self, delivery_id: str) -> None:
        self.delivery_id = delivery_id
        super().__init__(f"delivery {delivery_id} is no longer leased to this worker")


# --- delivery ------------------------------------------------------------------------


class DeliveryError(GatewayError):
    code = "delivery_error"


class RetryableSendError(DeliveryError):
    """The provider refused for now (429, 5xx, connection refused): safe to retry."""

    code = "send_retryable"

    def __init__(self, message: str, *, retry_after: float | None = None,
                 provider_code: int | None = None) -> None:
        self.retry_after = retry_after
        self.provider_code = provider_code
        super().__init__(message)


class PermanentSendError(DeliveryError):
    """The provider refused for good (21610 unsubscribed, 21211 invalid number, ...)."""

    code = "send_permanent"

    def __init__(self, message: str, *, provider_code: int | None = None) -> None:
        self.provider_code = provider_code
        super().__init__(message)


class UnknownOutcomeError(DeliveryError):
    """The request may have reached the provider (timeout, dropped connection after
    sending). Never re-send blindly: reconcile first."""

    code = "send_outcome_unknown"


# --- chat network (XMTP) -------------------------------------------------------------


class ChatNetworkError(GatewayError):
    code = "chat_network_error"


class WalletNotReachable(ChatNetworkError):
    """The wallet has no XMTP inbox, so it cannot be added to a group."""

    code = "wallet_not_on_xmtp"

    def __init__(self, wallet: str) -> None:
        self.wallet = wallet
        super().__init__(f"{wallet} is not on XMTP")


class InstallationLimitReached(ChatNetworkError):
    """The inbox has all the installations XMTP allows; one more cannot be registered."""

    code = "xmtp_installation_limit"

    def __init__(self, inbox_id: str, count: int, limit: int) -> None:
        self.inbox_id = inbox_id
        self.count = count
        self.limit = limit
        super().__init__(
            f"XMTP inbox {inbox_id} already has {count} of its {limit} installations, so "
            "this gateway cannot register another: revoke unused ones with 'gateway xmtp "
            "revoke' (see 'gateway xmtp status'), or bring back this data_dir's libxmtp "
            "database (xmtp.db_path), which is an installation already")


class InboxLogFull(ChatNetworkError):
    """The inbox used every identity update XMTP allows in its life (256)."""

    code = "xmtp_inbox_log_full"

    def __init__(self, inbox_id: str | None) -> None:
        self.inbox_id = inbox_id
        inbox = f"XMTP inbox {inbox_id}" if inbox_id else "the XMTP inbox"
        super().__init__(
            f"{inbox} has used all the identity updates XMTP allows in an inbox's life "
            "(256; each installation added or revoked takes one), so it can no longer add or "
            "revoke an installation: give the gateway a new inbox (a new xmtp.wallet_key)")


class InstallationLost(ChatNetworkError):
    """This data directory registered an installation whose libxmtp database is gone:
    starting would register another one, which XMTP counts against the inbox's caps."""

    code = "xmtp_installation_lost"

    def __init__(self, installation_id: str, inbox_id: str, db_path: str) -> None:
        self.installation_id = installation_id
        super().__init__(
            f"this data_dir registered XMTP installation {installation_id} of inbox "
            f"{inbox_id}, but its libxmtp database {db_path} is missing or new: restore it, "
            "or start with --new-installation to register a new installation (then revoke "
            f"the old one: gateway xmtp revoke {installation_id[:16]})")


class XmtpGatewayUnavailable(ChatNetworkError):
    """``xmtp.gateway_host`` (XMTP's decentralised network) does not answer as one."""

    code = "xmtp_gateway_unavailable"

    def __init__(self, gateway_host: str, reason: str) -> None:
        self.gateway_host = gateway_host
        super().__init__(f"xmtp.gateway_host {gateway_host}: {reason}")
