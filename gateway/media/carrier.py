"""Files on the message path: what the delivery channels (and the chat stream's media
step) ask of the media parts, one method per step.

Phone -> wallet (``ChatChannel``, at send time): ``group_content`` fetches one of the
message's files (Twilio's URL, with the account's credentials; an API caller's URL
without), checks it, and makes the EncodedContent for the group: inline when small, else
a remote attachment whose ciphertext is uploaded under a key stable per message and
item, so a retried upload overwrites the same object.

Wallet -> phone: ``describe`` (the stream's media step, before the relay records the
message) reads an attachment's envelope without fetching anything: a remote attachment
is kept as its reference; an inline file is stored (the relay keeps its blob key).
``for_phone`` (``PhoneChannel``, at send time) opens each file (downloads it, checks its
digest, decrypts it; or reads it from the store), checks it against the limits of the
phone's channel, stores it under a stable key and signs a short-lived URL for Twilio's
MediaUrl, or a longer-lived one to text as a link.

Refusals (type, size, count, a file that does not open) raise ``MediaRefused`` or
``AttachmentInvalid`` per file; the channels carry what they can and report the rest in
one line. ``MediaFetchFailed`` (``retryable``) and ``BlobStoreError`` are worth another
attempt.
"""

from __future__ import annotations

import hashlib
import mimetypes
from dataclasses import dataclass, field, replace
from datetime import timedelta

import xmtp_bindings as xb

from gateway.domain.models import Channel, Media, Message, MessageSource, RemoteReference
from gateway.domain.ports.blobs import BlobStore
from gateway.domain.ports.networks import ChatMessage
from gateway.errors import AttachmentInvalid, BlobNotFound, MediaFetchFailed, MediaRefused
from gateway.media.attachments import (
    Attachment,
    RemoteAttachment,
    decode_attachment,
    decode_remote_attachment,
)
from gateway.media.encoded import decode
from gateway.media.fetch import Credentials, MediaFetcher
from gateway.media.transfer import (
    MediaLimits,
    attachment_content,
    download_attachment,
    filename_for,
    publish_for_phone,
)

MB = 1024 * 1024
# WhatsApp through Twilio: one file per message; images JPEG/PNG up to 5 MB; audio,
# video, PDF and contact cards up to 16 MB.
WHATSAPP_TYPES = {
    "image/jpeg": 5 * MB, "image/png": 5 * MB,
    "audio/aac": 16 * MB, "audio/amr": 16 * MB, "audio/mpeg": 16 * MB, "audio/mp4": 16 * MB,
    "audio/ogg": 16 * MB, "video/mp4": 16 * MB, "video/3gpp": 16 * MB,
    "application/pdf": 16 * MB, "text/vcard": 16 * MB,
}
_PHONE_SOURCES = (MessageSource.SMS, MessageSource.WHATSAPP)
_REMOTE = "remoteStaticAttachment"
_MULTI_REMOTE = "multiRemoteStaticAttachment"
_INLINE = "attachment"
FILE_TYPES = (_INLINE, _REMOTE, _MULTI_REMOTE)


@dataclass(frozen=True, slots=True)
class CarrySettings:
    limits: MediaLimits
    inline_max_bytes: int = 0  # a phone's file up to this goes into the group inline
    group_url_ttl: timedelta = timedelta(days=7)  # a remote attachment's URL, for wallets
    phone_url_ttl: timedelta = timedelta(hours=1)  # a MediaUrl, for Twilio's fetch
    link_ttl: timedelta = timedelta(days=7)  # a link texted to a phone
    # Twilio's credentials for its media URLs (a phone's files); None: none configured.
    phone_credentials: Credentials | None = None
    # The longest one file's fetch and upload may take (the channels leave it room).
    item_seconds: float = 60.0


@dataclass(slots=True)
class Budget:
    """What is left of one message's byte allowance as its files are fetched."""

    left: int

    def spend(self, size: int) -> None:
        self.left -= size


@dataclass(frozen=True, slots=True)
class ForPhone:
    """A wallet's files made ready for a phone: ``urls`` for MediaUrl, or ``links``
    (name, URL) to text; ``refused`` says, per file, why it cannot go."""

    urls: tuple[str, ...] = ()
    links: tuple[tuple[str, str], ...] = ()
    refused: tuple[str, ...] = field(default=())


def group_blob_key(message_id: str, index: int) -> str:
    return f"xmtp/{message_id}-{index}"


def phone_blob_key(message_id: str, index: int) -> str:
    return f"phone/{message_id}-{index}"


def wallet_blob_key(xmtp_message_id: str) -> str:
    """A wallet's inline file, under its XMTP message's id (a stream catching up again
    stores it over itself)."""
    return "wallet/" + hashlib.sha256(xmtp_message_id.encode()).hexdigest()[:48]


def name_of(media: Media, index: int) -> str:
    return media.filename or filename_for(media.content_type or "", index)


class MediaCarrier:
    def __init__(self, store: BlobStore, fetcher: MediaFetcher,
                 settings: CarrySettings) -> None:
        self.store = store
        self.fetcher = fetcher
        self.settings = settings

    @property
    def limits(self) -> MediaLimits:
        return self.settings.limits

    def budget(self) -> Budget:
        return Budget(self.limits.max_message_bytes)

    # ---- phone -> wallet ---------------------------------------------------------------

    async def group_content(self, message: Message, index: int, budget: Budget) -> bytes:
        """The EncodedContent that carries file ``index`` of ``message`` into a group."""
        if index >= self.limits.max_items:
            raise MediaRefused(f"more than {self.limits.max_items} files in one message")
        media = message.media[index]
        credentials = (self.settings.phone_credentials if message.source in _PHONE_SOURCES
                       else None)
        if budget.left <= 0:
            raise MediaRefused(f"over the {self.limits.max_message_bytes}-byte "
                               "allowance of one message")
        got = await self.fetcher.fetch(media.url, credentials=credentials,
                                       max_bytes=min(self.limits.max_item_bytes, budget.left))
        if not self.limits.allows(got.content_type):
            raise MediaRefused(f"{got.content_type} files are not carried")
        budget.spend(len(got.data))
        attachment = Attachment(media.filename or filename_for(got.content_type, index),
                                got.content_type, got.data)
        return await attachment_content(
            self.store, attachment, ttl=self.settings.group_url_ttl,
            inline_max_bytes=self.settings.inline_max_bytes,
            key=group_blob_key(message.id, index))

    # ---- wallet -> phone ---------------------------------------------------------------

    async def describe(self, chat: ChatMessage) -> ChatMessage:
        """``chat`` with its files described (``media``), or why they cannot be carried
        (``refused``). Fetches nothing; an inline file is stored. Raises
        ``BlobStoreError`` when the store fails (the stream delivers the message again)."""
        if chat.content_type not in FILE_TYPES or not chat.encoded:
            return chat
        try:
            if chat.content_type == _INLINE:
                media: tuple[Media, ...] = (await self._keep_inline(chat),)
            elif chat.content_type == _REMOTE:
                media = (_remote_media(decode_remote_attachment(chat.encoded)),)
            else:
                media = _multi_remote_media(chat.encoded)
            if len(media) > self.limits.max_items:
                raise MediaRefused(f"{len(media)} files; at most {self.limits.max_items} "
                                   "per message")
        except (MediaRefused, AttachmentInvalid) as exc:
            return replace(chat, refused=str(exc))
        return replace(chat, media=media)

    async def _keep_inline(self, chat: ChatMessage) -> Media:
        limits = self.limits
        attachment = decode_attachment(chat.encoded, max_bytes=limits.max_item_bytes)
        _check(attachment, limits)
        key = wallet_blob_key(chat.message_id)
        kind = attachment.mime_type or "application/octet-stream"
        await self.store.put(key, attachment.data, kind)
        return Media(url="", content_type=kind, filename=attachment.filename,
                     size=len(attachment.data), blob_key=key)

    async def for_phone(self, message: Message, *, channel: Channel,
                        as_links: bool) -> ForPhone:
        """The message's files ready for a phone on ``channel``. Files the gateway does
        not hold (an API caller's URLs) go as they are. Raises what is worth another
        attempt (``MediaFetchFailed`` retryable, ``BlobStoreError``)."""
        urls: list[str] = []
        links: list[tuple[str, str]] = []
        refused: list[str] = []
        left = self.limits.max_message_bytes
        count = 0
        for index, media in enumerate(message.media):
            if not media.held:
                urls.append(media.url)
                continue
            name = name_of(media, index)
            try:
                attachment = await self._open(media)
                _check(attachment, self.limits)
                size = len(attachment.data)
                if not as_links:
                    _check_channel(attachment, channel)
                    if count >= self.limits.max_items:
                        raise MediaRefused(f"more than {self.limits.max_items} files")
                    if size > left:
                        raise MediaRefused(f"over the {self.limits.max_message_bytes}-byte "
                                           "allowance of one message")
                published = await publish_for_phone(
                    self.store, replace(attachment, filename=name),
                    ttl=self.settings.link_ttl if as_links else self.settings.phone_url_ttl,
                    key=phone_blob_key(message.id, index))
            except (MediaRefused, AttachmentInvalid, BlobNotFound) as exc:
                refused.append(f"{name} ({exc})")
                continue
            except MediaFetchFailed as exc:
                if exc.retryable:
                    raise
                refused.append(f"{name} ({exc})")
                continue
            count += 1
            left -= size
            if as_links:
                links.append((name, published.url))
            else:
                urls.append(published.url)
        return ForPhone(urls=tuple(urls), links=tuple(links), refused=tuple(refused))

    async def _open(self, media: Media) -> Attachment:
        if media.blob_key is not None:
            blob = await self.store.get(media.blob_key)
            return Attachment(media.filename, blob.content_type, blob.data)
        assert media.remote is not None
        ref = media.remote
        remote = RemoteAttachment(url=media.url, content_digest=ref.content_digest,
                                  secret=ref.secret, salt=ref.salt, nonce=ref.nonce,
                                  scheme=ref.scheme, content_length=media.size,
                                  filename=media.filename)
        # the ciphertext is the file plus its envelope's few hundred bytes and the tag
        attachment = await download_attachment(self.fetcher, remote,
                                               max_bytes=self.limits.max_item_bytes + 4096)
        return replace(attachment, filename=attachment.filename or media.filename)


def _check(attachment: Attachment, limits: MediaLimits) -> None:
    if len(attachment.data) > limits.max_item_bytes:
        raise MediaRefused(f"{len(attachment.data)} bytes, over the "
                           f"{limits.max_item_bytes}-byte cap")
    if not limits.allows(attachment.mime_type):
        raise MediaRefused(f"{attachment.mime_type or 'untyped'} files are not carried")


def _check_channel(attachment: Attachment, channel: Channel) -> None:
    if channel is not Channel.WHATSAPP:
        return
    kind = attachment.mime_type.split(";", 1)[0].strip().lower()
    cap = WHATSAPP_TYPES.get(kind)
    if cap is None:
        raise MediaRefused(f"WhatsApp does not take {kind or 'untyped'} files")
    if len(attachment.data) > cap:
        raise MediaRefused(f"WhatsApp takes {kind} files up to {cap // MB} MB")


def _remote_media(remote: RemoteAttachment) -> Media:
    kind = mimetypes.guess_type(remote.filename or "")[0] if remote.filename else None
    return Media(url=remote.url, content_type=kind, filename=remote.filename,
                 size=remote.content_length, remote=RemoteReference(
                     content_digest=remote.content_digest, secret=remote.secret,
                     salt=remote.salt, nonce=remote.nonce, scheme=remote.scheme))


def _multi_remote_media(encoded: bytes) -> tuple[Media, ...]:
    kind = decode(encoded).content_type
    if not kind.startswith(f"xmtp.org/{_MULTI_REMOTE}:"):
        raise AttachmentInvalid(f"expected a multi remote attachment, found {kind}")
    try:
        found = xb.decode_multi_remote_attachment(encoded)
    except (xb.FfiError, ValueError, TypeError) as exc:
        raise AttachmentInvalid(f"decode multi remote attachment: {exc}") from exc
    return tuple(_remote_media(RemoteAttachment(
        url=a.url, content_digest=a.content_digest, secret=bytes(a.secret),
        salt=bytes(a.salt), nonce=bytes(a.nonce), scheme=a.scheme,
        content_length=a.content_length, filename=a.filename)) for a in found.attachments)
