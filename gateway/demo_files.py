"""Files in ``gateway demo``: what the demo phone and wallet send (a file from disk, or a
picture made up for the scripted run) and how what they receive is opened and saved
under ``<data_dir>/demo-files/`` so it can be looked at and compared.

The demo wallet sends as an XMTP app would: a small file inline (an ``attachment``), a
larger one as a remote attachment, encrypted and uploaded — here to the gateway's own
blob store, whose signed URL the gateway then fetches like any stranger's (the embedded
config allows loopback URLs).
"""

from __future__ import annotations

import hashlib
import mimetypes
import secrets
import struct
import zlib
from datetime import timedelta
from pathlib import Path

import aiohttp

from gateway.domain.ports.blobs import BlobStore, new_blob_key
from gateway.media.attachments import (
    Attachment,
    decode_attachment,
    decode_remote_attachment,
    decrypt_attachment,
)
from gateway.media.transfer import attachment_content
from gateway.xmtp.client import XmtpMessage

FILES_DIR = "demo-files"  # under the data directory
_FILE_TYPES = ("xmtp.org/attachment:", "xmtp.org/remoteStaticAttachment:")
_LINK_TTL = timedelta(days=1)


def sample_picture(side: int = 320) -> bytes:
    """A PNG of ``side`` x ``side`` coloured noise (about 300 KB at 320: over the
    default inline size, so it travels as a remote attachment), different every time."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))

    rows = b"".join(b"\x00" + secrets.token_bytes(side * 3) for _ in range(side))
    header = struct.pack(">IIBBBBB", side, side, 8, 2, 0, 0, 0)  # 8-bit RGB
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows, 1)) + chunk(b"IEND", b""))


def kind_of(path: Path) -> str:
    return mimetypes.guess_type(path.name)[0] or "application/octet-stream"


def is_file(message: XmtpMessage) -> bool:
    return message.content_type.startswith(_FILE_TYPES)


async def wallet_content(attachment: Attachment, store: BlobStore, *,
                         inline_max_bytes: int) -> bytes:
    """The EncodedContent the demo wallet sends for a file."""
    return await attachment_content(store, attachment, ttl=_LINK_TTL,
                                    inline_max_bytes=inline_max_bytes,
                                    key=new_blob_key("demo"))


async def open_file(message: XmtpMessage, session: aiohttp.ClientSession) -> Attachment:
    """What a wallet app shows of a file message: inline, or fetched and decrypted."""
    if message.content_type.startswith("xmtp.org/attachment:"):
        return decode_attachment(message.encoded)
    remote = decode_remote_attachment(message.encoded)
    async with session.get(remote.url, timeout=aiohttp.ClientTimeout(total=30)) as response:
        response.raise_for_status()
        return decrypt_attachment(await response.read(), remote)


def save(directory: Path, name: str | None, data: bytes) -> Path:
    """Writes ``data`` under ``directory`` (a name of its own if the file has none or
    one that is taken), and returns where."""
    directory.mkdir(parents=True, exist_ok=True)
    base = Path(name or "file").name or "file"
    path = directory / base
    if path.exists():
        path = directory / f"{path.stem}-{secrets.token_hex(2)}{path.suffix}"
    path.write_bytes(data)
    return path


def describe(data: bytes, kind: str) -> str:
    """"image/png, 307,294 bytes, sha256 1a2b3c4d" : enough to compare both ends."""
    return f"{kind}, {len(data):,} bytes, sha256 {hashlib.sha256(data).hexdigest()[:8]}"
