"""Reading MLS headers and key packages (RFC 9420 TLS encoding)."""

from __future__ import annotations

import pytest

from gateway.xmtp.devnode.mls_wire import (
    MalformedMls,
    key_package_installation_key,
    parse_group_message,
)


def varint(n: int) -> bytes:
    if n < 1 << 6:
        return n.to_bytes(1, "big")
    if n < 1 << 14:
        return (n | 0x4000).to_bytes(2, "big")
    return (n | 0x80000000).to_bytes(4, "big")


def vector(data: bytes) -> bytes:
    return varint(len(data)) + data


def private_message(group_id: bytes, epoch: int, content_type: int) -> bytes:
    return (b"\x00\x01\x00\x02" + vector(group_id) + epoch.to_bytes(8, "big")
            + bytes([content_type]) + vector(b"aad") + b"ciphertext")


def public_message(group_id: bytes, sender: bytes, content_type: int) -> bytes:
    return (b"\x00\x01\x00\x01" + vector(group_id) + (7).to_bytes(8, "big") + sender
            + vector(b"authenticated data") + bytes([content_type]) + b"content")


def key_package(signature_key: bytes) -> bytes:
    return (b"\x00\x01\x00\x01" + vector(b"i" * 32) + vector(b"e" * 32) + vector(signature_key)
            + b"credential and the rest")


class TestGroupMessageHeader:
    def test_a_private_application_message_names_its_group(self) -> None:
        header = parse_group_message(private_message(b"g" * 16, 5, 1))
        assert (header.group_id, header.epoch, header.is_commit) == (b"g" * 16, 5, False)

    def test_a_private_commit_is_flagged(self) -> None:
        assert parse_group_message(private_message(b"g", 1, 3)).is_commit

    @pytest.mark.parametrize("sender", [b"\x01\x00\x00\x00\x02", b"\x02\x00\x00\x00\x00",
                                        b"\x03", b"\x04"])
    def test_a_public_commit_is_read_past_every_sender_kind(self, sender: bytes) -> None:
        header = parse_group_message(public_message(b"group-id", sender, 3))
        assert (header.group_id, header.epoch, header.is_commit) == (b"group-id", 7, True)

    def test_a_long_group_id_uses_a_two_byte_length(self) -> None:
        assert parse_group_message(private_message(b"x" * 300, 0, 2)).group_id == b"x" * 300

    @pytest.mark.parametrize("cut", [0, 3, 4, 10, 20])
    def test_a_truncated_message_is_malformed(self, cut: int) -> None:
        with pytest.raises(MalformedMls, match="truncated"):
            parse_group_message(private_message(b"g" * 16, 5, 1)[:cut])

    @pytest.mark.parametrize(("data", "reason"), [
        (b"\x00\x02\x00\x02" + vector(b"g") + bytes(9), "version"),
        (b"\x00\x01\x00\x03" + vector(b"g") + bytes(9), "wire format 3"),
        (b"\x00\x01\x00\x02" + vector(b"") + bytes(9), "empty group id"),
        (b"\x00\x01\x00\x02" + vector(b"g") + bytes(8) + b"\x09", "content type"),
        (b"\x00\x01\x00\x02\xc0", "variable-length"),
        (b"\x00\x01\x00\x01" + vector(b"g") + bytes(8) + b"\x07", "sender type"),
    ])
    def test_other_structures_are_malformed(self, data: bytes, reason: str) -> None:
        with pytest.raises(MalformedMls, match=reason):
            parse_group_message(data)


class TestKeyPackage:
    def test_the_installation_key_is_the_leaf_signature_key(self) -> None:
        assert key_package_installation_key(key_package(b"k" * 32)) == b"k" * 32

    def test_garbage_is_malformed(self) -> None:
        with pytest.raises(MalformedMls):
            key_package_installation_key(b"\x00\x01\x00\x01\x7f\x7f\x7f")
        with pytest.raises(MalformedMls, match="version"):
            key_package_installation_key(b"garbage that is long enough")
