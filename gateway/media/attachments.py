"""XMTP's attachment content types and the encryption of remote attachments.

Two content types carry files in XMTP:

- ``xmtp.org/attachment:1.0`` holds the file inline (filename, mimeType, bytes); fine for
  small files, since an XMTP message is limited in size.
- ``xmtp.org/remoteStaticAttachment:1.0`` holds a URL and what is needed to open what it
  serves: the file is wrapped as an ``attachment`` EncodedContent (protobuf), encrypted
  with a random 32-byte secret (key = HKDF-SHA256(secret, a random 32-byte salt, no
  info, 32 bytes); AES-256-GCM with a random 12-byte nonce, no associated data), and the
  ciphertext is uploaded; ``contentDigest`` is the lowercase hex SHA-256 of the
  ciphertext (tag included). These parameters are libxmtp's and xmtp-js's; the test
  suite checks them against libxmtp's own encoding and a real client.

The ``remoteStaticAttachment`` envelope (a URL and keys, small) is encoded by the pinned
libxmtp bindings, so what we send is what XMTP clients read. The ``attachment`` envelope
holds the file itself and is encoded with protobuf (``encoded.py``): the bindings copy
bytes into Rust at about 0.3 s per MB; the tests check our encoding against theirs. Every
function here is pure and synchronous, so a benchmark can time it alone; large files are
better encrypted in a thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import secrets
from collections.abc import Iterator
from dataclasses import dataclass, field

import xmtp_bindings as xb
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from gateway.errors import AttachmentInvalid, first_line
from gateway.media.encoded import EncodedContent, decode, encode

ATTACHMENT_CONTENT_TYPE = "xmtp.org/attachment:1.0"
REMOTE_ATTACHMENT_CONTENT_TYPE = "xmtp.org/remoteStaticAttachment:1.0"
SCHEME = "https://"  # what xmtp-js writes in ``scheme``; clients do not act on it

SECRET_BYTES = 32
SALT_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16


@dataclass(frozen=True, slots=True)
class Attachment:
    """A file as XMTP's ``attachment`` content type holds it."""

    filename: str | None
    mime_type: str
    data: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class RemoteAttachment:
    """What a ``remoteStaticAttachment`` message carries. ``content_length`` is the
    ciphertext's length, as libxmtp writes it (some clients write the file's; it is
    advisory and never trusted as a bound)."""

    url: str
    content_digest: str
    secret: bytes = field(repr=False)
    salt: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    scheme: str = SCHEME
    content_length: int | None = None
    filename: str | None = None


@dataclass(frozen=True, slots=True)
class EncryptedAttachment:
    """An attachment sealed for upload: ``payload`` goes to the URL, the rest into the
    message (``remote(url)``)."""

    payload: bytes = field(repr=False)
    content_digest: str
    secret: bytes = field(repr=False)
    salt: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    filename: str | None

    def remote(self, url: str) -> RemoteAttachment:
        return RemoteAttachment(
            url=url, content_digest=self.content_digest, secret=self.secret,
            salt=self.salt, nonce=self.nonce, content_length=len(self.payload),
            filename=self.filename)


@contextlib.contextmanager
def _malformed(action: str) -> Iterator[None]:
    try:
        yield
    except (xb.FfiError, ValueError, TypeError) as exc:
        raise AttachmentInvalid(f"{action}: {first_line(exc)}") from exc


# --- encoding (libxmtp's codecs) ------------------------------------------------------


def encode_attachment(attachment: Attachment) -> bytes:
    """The ``attachment`` EncodedContent (protobuf bytes), as an XMTP message holds it:
    parameters ``mimeType`` and ``filename``, a fallback text for clients without
    attachments, the file as content."""
    parameters = {"mimeType": attachment.mime_type}
    if attachment.filename is not None:
        parameters["filename"] = attachment.filename
    name = attachment.filename or "a file"
    return encode(EncodedContent(
        content_type=ATTACHMENT_CONTENT_TYPE, parameters=parameters, content=attachment.data,
        fallback=f"[attachment: {name}; this app cannot show attachments]"))


def _expect(encoded: bytes, content_type: str) -> None:
    # libxmtp's decoders read the fields without looking at the type (a text decodes
    # as an attachment with no mimeType): the type is checked here first.
    found = decode(encoded).content_type
    if found != content_type:
        raise AttachmentInvalid(f"expected {content_type}, found {found}")


def decode_attachment(encoded: bytes, *, max_bytes: int = 16 * 1024 * 1024) -> Attachment:
    """``max_bytes`` bounds a compressed file's size once decompressed."""
    found = decode(encoded, max_content_bytes=max_bytes)
    if found.content_type != ATTACHMENT_CONTENT_TYPE:
        raise AttachmentInvalid(f"expected {ATTACHMENT_CONTENT_TYPE}, "
                                f"found {found.content_type}")
    return Attachment(filename=found.parameters.get("filename"),
                      mime_type=found.parameters.get("mimeType", ""), data=found.content)


def encode_remote_attachment(remote: RemoteAttachment) -> bytes:
    """The ``remoteStaticAttachment`` EncodedContent, ready to send into a group."""
    with _malformed("encode remote attachment"):
        encoded: bytes = xb.encode_remote_attachment(xb.FfiRemoteAttachment(
            url=remote.url, content_digest=remote.content_digest, secret=remote.secret,
            salt=remote.salt, nonce=remote.nonce, scheme=remote.scheme,
            content_length=remote.content_length, filename=remote.filename))
    return encoded


def decode_remote_attachment(encoded: bytes) -> RemoteAttachment:
    _expect(encoded, REMOTE_ATTACHMENT_CONTENT_TYPE)
    with _malformed("decode remote attachment"):
        found = xb.decode_remote_attachment(encoded)
    return RemoteAttachment(
        url=found.url, content_digest=found.content_digest, secret=bytes(found.secret),
        salt=bytes(found.salt), nonce=bytes(found.nonce), scheme=found.scheme,
        content_length=found.content_length, filename=found.filename)


# --- encryption -----------------------------------------------------------------------


def content_digest(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def _key(secret: bytes, salt: bytes) -> bytes:
    # No info string: libxmtp and xmtp-js both expand with an empty one.
    return HKDF(algorithm=SHA256(), length=32, salt=salt, info=b"").derive(secret)


def encrypt_encoded(encoded: bytes, *, filename: str | None = None) -> EncryptedAttachment:
    """Seals EncodedContent bytes with a fresh secret, salt and nonce."""
    secret = secrets.token_bytes(SECRET_BYTES)
    salt = secrets.token_bytes(SALT_BYTES)
    nonce = secrets.token_bytes(NONCE_BYTES)
    payload = AESGCM(_key(secret, salt)).encrypt(nonce, encoded, None)
    return EncryptedAttachment(payload=payload, content_digest=content_digest(payload),
                               secret=secret, salt=salt, nonce=nonce, filename=filename)


def encrypt_attachment(attachment: Attachment) -> EncryptedAttachment:
    """Wraps the file as an ``attachment`` EncodedContent, then seals it."""
    return encrypt_encoded(encode_attachment(attachment), filename=attachment.filename)


def decrypt_encoded(payload: bytes, remote: RemoteAttachment) -> bytes:
    """The EncodedContent bytes sealed in ``payload``. The digest is checked first, so
    bytes that are not the ones the message names are refused before any decryption."""
    expected = remote.content_digest.strip().lower()
    if not hmac.compare_digest(content_digest(payload), expected):
        raise AttachmentInvalid("content digest mismatch: not the file the message names")
    if len(remote.salt) != SALT_BYTES or len(remote.nonce) != NONCE_BYTES:
        raise AttachmentInvalid(f"salt must be {SALT_BYTES} bytes and nonce {NONCE_BYTES}")
    if not remote.secret:
        raise AttachmentInvalid("the secret is empty")
    try:
        return AESGCM(_key(remote.secret, remote.salt)).decrypt(remote.nonce, payload, None)
    except InvalidTag:
        raise AttachmentInvalid("the ciphertext does not open with the message's key") from None


def decrypt_attachment(payload: bytes, remote: RemoteAttachment) -> Attachment:
    """Verifies, decrypts and unwraps what a remote attachment's URL served."""
    return decode_attachment(decrypt_encoded(payload, remote))
