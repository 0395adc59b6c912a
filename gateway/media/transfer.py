"""Carrying media across: the steps a delivery takes, each callable (and timeable) on
its own.

Phone -> wallet:
  ``fetch_phone_media`` (Twilio's MediaUrls, with Twilio's credentials, within the
  limits) then ``attachment_content`` per file: the EncodedContent to send into the
  group (inline when small, else a remote attachment whose ciphertext is uploaded).
Wallet -> phone:
  ``attachment_from_xmtp`` (an inline attachment, or a remote one fetched without
  credentials as a stranger's URL and decrypted) then ``publish_for_phone``: the file
  stored and a URL for Twilio's MediaUrl.
"""

from __future__ import annotations

import asyncio
import mimetypes
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from gateway.domain.models import Media
from gateway.domain.ports.blobs import BlobStore, new_blob_key
from gateway.errors import AttachmentInvalid, MediaRefused
from gateway.media.attachments import (
    ATTACHMENT_CONTENT_TYPE,
    REMOTE_ATTACHMENT_CONTENT_TYPE,
    Attachment,
    RemoteAttachment,
    decode_attachment,
    decode_remote_attachment,
    decrypt_attachment,
    encode_attachment,
    encode_remote_attachment,
    encrypt_attachment,
)
from gateway.media.fetch import Credentials, FetchedMedia, MediaFetcher

_THREAD_ABOVE = 256 * 1024  # encrypt larger files off the event loop
CIPHERTEXT_TYPE = "application/octet-stream"


@dataclass(frozen=True, slots=True)
class MediaLimits:
    max_item_bytes: int
    max_message_bytes: int
    max_items: int
    content_types: tuple[str, ...]  # "image/png", or "image/*" for a whole type

    def allows(self, content_type: str) -> bool:
        kind = content_type.split(";", 1)[0].strip().lower()
        return any(kind == allowed or (allowed.endswith("/*") and kind.startswith(allowed[:-1]))
                   for allowed in self.content_types)


@dataclass(frozen=True, slots=True)
class PublishedMedia:
    key: str
    url: str
    content_type: str
    size: int


# --- phone -> wallet ---------------------------------------------------------------


async def fetch_phone_media(fetcher: MediaFetcher, media: Sequence[Media], *,
                            credentials: Credentials | None,
                            limits: MediaLimits) -> list[FetchedMedia]:
    """The files of an inbound MMS/WhatsApp message, in order. Refuses (``MediaRefused``)
    more than ``max_items``, a type not allowed, or more bytes than the per-item or
    per-message cap (checked while each file streams in)."""
    if len(media) > limits.max_items:
        raise MediaRefused(f"{len(media)} files; at most {limits.max_items} per message")
    found: list[FetchedMedia] = []
    left = limits.max_message_bytes
    for item in media:
        got = await fetcher.fetch(item.url, credentials=credentials,
                                  max_bytes=min(limits.max_item_bytes, left))
        if not limits.allows(got.content_type):
            raise MediaRefused(f"content type {got.content_type} is not allowed")
        left -= len(got.data)
        found.append(got)
    return found


def filename_for(content_type: str, index: int = 0) -> str:
    """A name for a file a phone sent (MMS carries none): ``media-1.jpg``."""
    extension = mimetypes.guess_extension(content_type.split(";", 1)[0].strip()) or ".bin"
    return f"media-{index + 1}{extension}"


async def attachment_content(store: BlobStore, attachment: Attachment, *, ttl: timedelta,
                             inline_max_bytes: int = 0, key: str | None = None) -> bytes:
    """The EncodedContent that carries ``attachment`` into an XMTP group: an inline
    ``attachment`` up to ``inline_max_bytes``, else a ``remoteStaticAttachment`` whose
    ciphertext is uploaded to ``store`` (under ``key``, for an idempotent retry)."""
    if len(attachment.data) <= inline_max_bytes:
        return encode_attachment(attachment)
    remote = await upload_attachment(store, attachment, ttl=ttl, key=key)
    return encode_remote_attachment(remote)


async def upload_attachment(store: BlobStore, attachment: Attachment, *, ttl: timedelta,
                            key: str | None = None) -> RemoteAttachment:
    """Encrypts (XMTP's scheme), uploads the ciphertext and returns what the message
    carries."""
    if len(attachment.data) > _THREAD_ABOVE:
        sealed = await asyncio.to_thread(encrypt_attachment, attachment)
    else:
        sealed = encrypt_attachment(attachment)
    key = key or new_blob_key("xmtp")
    await store.put(key, sealed.payload, CIPHERTEXT_TYPE)
    return sealed.remote(await store.url(key, ttl=ttl))


# --- wallet -> phone ---------------------------------------------------------------


async def attachment_from_xmtp(content_type: str, encoded: bytes, fetcher: MediaFetcher, *,
                               limits: MediaLimits) -> Attachment:
    """The file an XMTP message carries. A remote attachment's URL is a stranger's: it
    is fetched without credentials, within the per-item cap, and must match its digest."""
    if content_type == ATTACHMENT_CONTENT_TYPE:
        attachment = decode_attachment(encoded, max_bytes=limits.max_item_bytes)
    elif content_type == REMOTE_ATTACHMENT_CONTENT_TYPE:
        attachment = await download_attachment(fetcher, decode_remote_attachment(encoded),
                                               max_bytes=limits.max_item_bytes + 1024)
    else:
        raise AttachmentInvalid(f"{content_type} carries no file")
    if len(attachment.data) > limits.max_item_bytes:
        raise MediaRefused(f"{len(attachment.data)} bytes is over the "
                           f"{limits.max_item_bytes}-byte cap")
    if not limits.allows(attachment.mime_type):
        raise MediaRefused(f"content type {attachment.mime_type or '(none)'} is not allowed")
    return attachment


async def download_attachment(fetcher: MediaFetcher, remote: RemoteAttachment, *,
                              max_bytes: int | None = None) -> Attachment:
    """Fetches a remote attachment's ciphertext and opens it. ``max_bytes`` bounds the
    ciphertext (the file plus its encoding's few hundred bytes)."""
    fetched = await fetcher.fetch(remote.url, max_bytes=max_bytes)
    if len(fetched.data) > _THREAD_ABOVE:
        return await asyncio.to_thread(decrypt_attachment, fetched.data, remote)
    return decrypt_attachment(fetched.data, remote)


async def publish_for_phone(store: BlobStore, attachment: Attachment, *, ttl: timedelta,
                            key: str | None = None) -> PublishedMedia:
    """Stores the file as is and returns the URL to give Twilio as MediaUrl."""
    key = key or new_blob_key("phone")
    kind = attachment.mime_type or "application/octet-stream"
    await store.put(key, attachment.data, kind)
    return PublishedMedia(key=key, url=await store.url(key, ttl=ttl), content_type=kind,
                          size=len(attachment.data))
