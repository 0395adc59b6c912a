"""The few bits of MLS (RFC 9420) wire format the devnode reads.

The node never decrypts or verifies anything; it only needs the group id and the commit
flag of a group message, and the installation key of a key package. Both sit at fixed
places near the start of the TLS-encoded structures.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.errors import BadRequest

MLS_VERSION_10 = 1
WIRE_FORMAT_PUBLIC = 1
WIRE_FORMAT_PRIVATE = 2
CONTENT_TYPE_COMMIT = 3
SENDER_MEMBER = 1
SENDER_EXTERNAL = 2
SENDER_NEW_MEMBER_PROPOSAL = 3
SENDER_NEW_MEMBER_COMMIT = 4


class MalformedMls(BadRequest):
    """The bytes are not the MLS structure the request claims to carry."""


@dataclass(frozen=True, slots=True)
class GroupMessageHeader:
    group_id: bytes
    epoch: int
    is_commit: bool


class _Reader:
    def __init__(self, data: bytes, what: str) -> None:
        self._data = data
        self._pos = 0
        self._what = what

    def take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._data):
            raise MalformedMls(f"{self._what}: truncated at byte {self._pos} (needed {n} more)")
        chunk = self._data[self._pos:end]
        self._pos = end
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")

    def varint(self) -> int:
        # RFC 9420 section 2.1.2: the top two bits of the first byte give the length.
        first = self.uint(1)
        prefix = first >> 6
        if prefix == 3:
            raise MalformedMls(f"{self._what}: invalid variable-length integer prefix")
        value = first & 0x3F
        for _ in range((1 << prefix) - 1):
            value = (value << 8) | self.uint(1)
        return value

    def vector(self) -> bytes:
        return self.take(self.varint())


def parse_group_message(data: bytes) -> GroupMessageHeader:
    """Reads ``group_id``, ``epoch`` and whether it is a commit from an MLSMessage."""
    r = _Reader(data, "group message")
    version = r.uint(2)
    if version != MLS_VERSION_10:
        raise MalformedMls(f"group message: unsupported MLS version {version}")
    wire_format = r.uint(2)
    if wire_format == WIRE_FORMAT_PRIVATE:
        group_id = r.vector()
        epoch = r.uint(8)
        content_type = r.uint(1)
    elif wire_format == WIRE_FORMAT_PUBLIC:
        group_id = r.vector()
        epoch = r.uint(8)
        sender_type = r.uint(1)
        if sender_type in (SENDER_MEMBER, SENDER_EXTERNAL):
            r.uint(4)
        elif sender_type not in (SENDER_NEW_MEMBER_PROPOSAL, SENDER_NEW_MEMBER_COMMIT):
            raise MalformedMls(f"group message: unknown sender type {sender_type}")
        r.vector()  # authenticated_data
        content_type = r.uint(1)
    else:
        raise MalformedMls(f"group message: wire format {wire_format} is not a group message")
    if not group_id:
        raise MalformedMls("group message: empty group id")
    if content_type not in (1, 2, 3):
        raise MalformedMls(f"group message: unknown content type {content_type}")
    return GroupMessageHeader(group_id, epoch, content_type == CONTENT_TYPE_COMMIT)


def key_package_installation_key(key_package: bytes) -> bytes:
    """The installation key of a TLS-serialized KeyPackage: its leaf node's signature key."""
    r = _Reader(key_package, "key package")
    version = r.uint(2)
    if version != MLS_VERSION_10:
        raise MalformedMls(f"key package: unsupported MLS version {version}")
    r.uint(2)  # cipher suite
    r.vector()  # init_key
    r.vector()  # leaf node: encryption_key
    signature_key = r.vector()
    if not signature_key:
        raise MalformedMls("key package: empty signature key")
    return signature_key
