"""XMTP attachments: libxmtp's encodings and the remote-attachment encryption."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import secrets
import zlib
from collections.abc import Callable

import pytest
import xmtp_bindings as xb
from Crypto.Cipher import AES
from Crypto.Hash import SHA256
from Crypto.Protocol.KDF import HKDF

from gateway.errors import AttachmentInvalid
from gateway.media.attachments import (
    Attachment,
    RemoteAttachment,
    decode_attachment,
    decode_remote_attachment,
    decrypt_attachment,
    decrypt_encoded,
    encode_attachment,
    encode_remote_attachment,
    encrypt_attachment,
)
from gateway.media.encoded import DEFLATE, GZIP, EncodedContent, decode, encode
from gateway.xmtp.client import content_type_of

PICTURE = Attachment(filename="cat.jpg", mime_type="image/jpeg",
                     data=b"\xff\xd8\xff\xe0" + secrets.token_bytes(2000))


class TestEncodings:
    def test_an_attachment_is_libxmtps_attachment_content(self) -> None:
        encoded = encode_attachment(PICTURE)
        assert content_type_of(encoded) == "xmtp.org/attachment:1.0"
        assert decode_attachment(encoded) == PICTURE
        found = xb.decode_attachment(encoded)
        assert (found.filename, found.mime_type, bytes(found.content)) == (
            "cat.jpg", "image/jpeg", PICTURE.data)

    def test_a_remote_attachment_round_trips_through_libxmtps_codec(self) -> None:
        remote = encrypt_attachment(PICTURE).remote("https://media.example.org/abc")
        encoded = encode_remote_attachment(remote)
        assert content_type_of(encoded) == "xmtp.org/remoteStaticAttachment:1.0"
        assert decode_remote_attachment(encoded) == remote
        assert remote.scheme == "https://"

    def test_another_content_type_is_not_taken_for_an_attachment(self) -> None:
        with pytest.raises(AttachmentInvalid, match=r"expected xmtp\.org/attachment"):
            decode_attachment(xb.encode_text("hello"))
        with pytest.raises(AttachmentInvalid, match="remoteStaticAttachment"):
            decode_remote_attachment(encode_attachment(PICTURE))

    def test_garbage_is_refused_as_invalid(self) -> None:
        with pytest.raises(AttachmentInvalid):
            decode_attachment(b"\xff\xfe not protobuf")

    def test_secrets_stay_out_of_reprs(self) -> None:
        sealed = encrypt_attachment(PICTURE)
        remote = sealed.remote("https://x.example/1")
        for shown in (repr(sealed), repr(remote)):
            assert sealed.secret.hex() not in shown
            assert repr(sealed.secret) not in shown
        assert repr(PICTURE.data[:8]) not in repr(PICTURE)


class TestRemoteAttachmentEncryption:
    def test_what_is_encrypted_decrypts_to_the_same_file(self) -> None:
        sealed = encrypt_attachment(PICTURE)
        assert decrypt_attachment(sealed.payload, sealed.remote("https://x.example/1")) == PICTURE

    def test_the_parameters_are_xmtps(self) -> None:
        sealed = encrypt_attachment(PICTURE)
        assert (len(sealed.secret), len(sealed.salt), len(sealed.nonce)) == (32, 32, 12)
        assert sealed.content_digest == hashlib.sha256(sealed.payload).hexdigest()
        # the payload is the EncodedContent sealed with a 16-byte tag, not the raw file
        # (libxmtp writes its parameters in hash order, so only the length is stable)
        assert len(sealed.payload) == len(encode_attachment(PICTURE)) + 16
        assert sealed.remote("https://x.example/1").content_length == len(sealed.payload)

    def test_each_encryption_uses_fresh_randomness(self) -> None:
        one, two = encrypt_attachment(PICTURE), encrypt_attachment(PICTURE)
        assert one.secret != two.secret and one.salt != two.salt and one.nonce != two.nonce
        assert one.payload != two.payload

    def test_a_second_implementation_opens_what_we_seal(self) -> None:
        """PyCryptodome's HKDF and AES-GCM (independent of ``cryptography``) with XMTP's
        parameters: empty info, no associated data, tag after the ciphertext."""
        sealed = encrypt_attachment(PICTURE)
        key = HKDF(sealed.secret, 32, sealed.salt, SHA256, context=b"")
        cipher = AES.new(key, AES.MODE_GCM, nonce=sealed.nonce)
        plain = cipher.decrypt_and_verify(sealed.payload[:-16], sealed.payload[-16:])
        assert decode_attachment(plain) == PICTURE

    def test_we_open_what_a_second_implementation_seals(self) -> None:
        secret, salt, nonce = (secrets.token_bytes(n) for n in (32, 32, 12))
        key = HKDF(secret, 32, salt, SHA256, context=b"")
        ciphertext, tag = AES.new(key, AES.MODE_GCM, nonce=nonce).encrypt_and_digest(
            encode_attachment(PICTURE))
        payload = ciphertext + tag
        remote = RemoteAttachment(url="https://x.example/1",
                                  content_digest=hashlib.sha256(payload).hexdigest(),
                                  secret=secret, salt=salt, nonce=nonce)
        assert decrypt_attachment(payload, remote) == PICTURE

    def test_a_digest_mismatch_is_refused_before_decrypting(self) -> None:
        sealed = encrypt_attachment(PICTURE)
        remote = dataclasses.replace(sealed.remote("https://x.example/1"),
                                     content_digest="00" * 32)
        with pytest.raises(AttachmentInvalid, match="digest mismatch"):
            decrypt_attachment(sealed.payload, remote)

    def test_an_uppercase_digest_is_the_same_digest(self) -> None:
        sealed = encrypt_attachment(PICTURE)
        remote = dataclasses.replace(sealed.remote("https://x.example/1"),
                                     content_digest=sealed.content_digest.upper())
        assert decrypt_attachment(sealed.payload, remote) == PICTURE

    def test_tampered_ciphertext_is_refused_even_with_a_matching_digest(self) -> None:
        sealed = encrypt_attachment(PICTURE)
        tampered = bytearray(sealed.payload)
        tampered[10] ^= 0x01
        remote = dataclasses.replace(
            sealed.remote("https://x.example/1"),
            content_digest=hashlib.sha256(bytes(tampered)).hexdigest())
        with pytest.raises(AttachmentInvalid, match="does not open"):
            decrypt_attachment(bytes(tampered), remote)

    def test_tampered_ciphertext_fails_the_digest_first(self) -> None:
        sealed = encrypt_attachment(PICTURE)
        tampered = sealed.payload[:-1] + bytes([sealed.payload[-1] ^ 0x80])
        with pytest.raises(AttachmentInvalid, match="digest mismatch"):
            decrypt_attachment(tampered, sealed.remote("https://x.example/1"))

    def test_a_wrong_secret_is_refused(self) -> None:
        sealed = encrypt_attachment(PICTURE)
        remote = dataclasses.replace(sealed.remote("https://x.example/1"),
                                     secret=secrets.token_bytes(32))
        with pytest.raises(AttachmentInvalid, match="does not open"):
            decrypt_attachment(sealed.payload, remote)

    @pytest.mark.parametrize(("salt", "nonce"), [(16, 12), (32, 8), (0, 12)])
    def test_wrong_sized_salt_or_nonce_is_refused(self, salt: int, nonce: int) -> None:
        sealed = encrypt_attachment(PICTURE)
        remote = dataclasses.replace(sealed.remote("https://x.example/1"),
                                     salt=bytes(salt), nonce=bytes(nonce))
        with pytest.raises(AttachmentInvalid, match="salt must be"):
            decrypt_encoded(sealed.payload, remote)


class TestEnvelopes:
    """Our protobuf envelope and libxmtp's read each other."""

    def test_libxmtp_reads_our_attachment_envelope(self) -> None:
        found = xb.decode_attachment(encode_attachment(PICTURE))
        assert (found.filename, found.mime_type, bytes(found.content)) == (
            PICTURE.filename, PICTURE.mime_type, PICTURE.data)
        nameless = Attachment(None, "image/png", b"png")
        assert xb.decode_attachment(encode_attachment(nameless)).filename is None

    def test_we_read_libxmtps_attachment_envelope(self) -> None:
        theirs = xb.encode_attachment(xb.FfiAttachment(
            filename="b.jpg", mime_type="image/jpeg", content=PICTURE.data))
        assert decode_attachment(theirs) == Attachment("b.jpg", "image/jpeg", PICTURE.data)
        assert decode(theirs).fallback is not None

    def test_our_envelope_carries_a_fallback_for_clients_without_attachments(self) -> None:
        fallback = decode(encode_attachment(PICTURE)).fallback
        assert fallback is not None and "cat.jpg" in fallback

    @pytest.mark.parametrize(("algorithm", "compress"), [
        (DEFLATE, zlib.compress),
        (DEFLATE, lambda data: _raw_deflate(data)),
        (GZIP, gzip.compress),
    ])
    def test_compressed_content_is_decompressed(self, algorithm: int,
                                                compress: Callable[[bytes], bytes]) -> None:
        data = b"hello compressed XMTP " * 50
        envelope = _compressed(compress(data), algorithm)
        assert decode_attachment(envelope).data == data

    def test_a_decompression_bomb_stops_at_the_cap(self) -> None:
        envelope = _compressed(zlib.compress(bytes(10_000_000)), DEFLATE)
        with pytest.raises(AttachmentInvalid, match="over 100000 bytes"):
            decode_attachment(envelope, max_bytes=100_000)

    def test_unknown_or_broken_compression_is_refused(self) -> None:
        with pytest.raises(AttachmentInvalid, match="unknown compression"):
            decode_attachment(_compressed(b"x", 7))
        with pytest.raises(AttachmentInvalid, match="does not decompress"):
            decode_attachment(_compressed(b"not deflate at all", GZIP))


def _raw_deflate(data: bytes) -> bytes:
    deflater = zlib.compressobj(wbits=-15)
    return deflater.compress(data) + deflater.flush()


def _compressed(content: bytes, algorithm: int) -> bytes:
    """An attachment envelope whose content is compressed (protobuf field 5)."""
    envelope = encode(EncodedContent("xmtp.org/attachment:1.0", {"mimeType": "text/plain"},
                                     content))
    return envelope + bytes([5 << 3]) + bytes([algorithm])
