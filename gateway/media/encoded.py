"""XMTP's ``EncodedContent`` envelope (xmtp.mls.message_contents), with protobuf.

Why not libxmtp's encoders for files: the uniffi bindings move ``bytes`` across the
Python/Rust boundary one byte at a time, about 0.3 s per MB each way, which makes a
5 MB picture cost seconds of CPU. The envelope is four fields; the protobuf runtime
(already a dependency) encodes it in microseconds. The message type is declared here
from XMTP's schema (field numbers as in its ``content.proto``) rather than generated,
and the tests check every encoding against libxmtp's own decoder.

    message ContentTypeId { string authority_id = 1; string type_id = 2;
                            uint32 version_major = 3; uint32 version_minor = 4; }
    enum Compression { COMPRESSION_DEFLATE = 0; COMPRESSION_GZIP = 1; }
    message EncodedContent { ContentTypeId type = 1; map<string, string> parameters = 2;
                             optional string fallback = 3; optional Compression
                             compression = 5; bytes content = 4; }
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError

from gateway.errors import AttachmentInvalid

DEFLATE, GZIP = 0, 1
_F = descriptor_pb2.FieldDescriptorProto
_PACKAGE = "gateway.media.xmtp"  # our own name: never clashes with generated XMTP types


def _declare() -> Any:
    file = descriptor_pb2.FileDescriptorProto(
        name="gateway/media/encoded_content.proto", package=_PACKAGE, syntax="proto3")
    type_id = file.message_type.add(name="ContentTypeId")
    for number, name, kind in ((1, "authority_id", _F.TYPE_STRING),
                               (2, "type_id", _F.TYPE_STRING),
                               (3, "version_major", _F.TYPE_UINT32),
                               (4, "version_minor", _F.TYPE_UINT32)):
        type_id.field.add(name=name, number=number, type=kind, label=_F.LABEL_OPTIONAL)
    compression = file.enum_type.add(name="Compression")
    compression.value.add(name="COMPRESSION_DEFLATE", number=DEFLATE)
    compression.value.add(name="COMPRESSION_GZIP", number=GZIP)
    encoded = file.message_type.add(name="EncodedContent")
    entry = encoded.nested_type.add(name="ParametersEntry")
    entry.options.map_entry = True
    entry.field.add(name="key", number=1, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    entry.field.add(name="value", number=2, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL)
    encoded.field.add(name="type", number=1, type=_F.TYPE_MESSAGE, label=_F.LABEL_OPTIONAL,
                      type_name=f".{_PACKAGE}.ContentTypeId")
    encoded.field.add(name="parameters", number=2, type=_F.TYPE_MESSAGE,
                      label=_F.LABEL_REPEATED,
                      type_name=f".{_PACKAGE}.EncodedContent.ParametersEntry")
    encoded.oneof_decl.add(name="_fallback")
    encoded.oneof_decl.add(name="_compression")
    encoded.field.add(name="fallback", number=3, type=_F.TYPE_STRING, label=_F.LABEL_OPTIONAL,
                      oneof_index=0, proto3_optional=True)
    encoded.field.add(name="compression", number=5, type=_F.TYPE_ENUM, label=_F.LABEL_OPTIONAL,
                      type_name=f".{_PACKAGE}.Compression", oneof_index=1,
                      proto3_optional=True)
    encoded.field.add(name="content", number=4, type=_F.TYPE_BYTES, label=_F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName(f"{_PACKAGE}.EncodedContent"))


_ENCODED_CONTENT = _declare()
_TYPE = re.compile(r"(?P<authority>[^/]+)/(?P<type>[^:]+):(?P<major>\d+)\.(?P<minor>\d+)")


@dataclass(frozen=True, slots=True)
class EncodedContent:
    content_type: str  # "authority/type:major.minor", e.g. "xmtp.org/attachment:1.0"
    parameters: Mapping[str, str]
    content: bytes = field(repr=False)
    fallback: str | None = None


def encode(content: EncodedContent) -> bytes:
    found = _TYPE.fullmatch(content.content_type)
    if found is None:
        raise ValueError(f"not a content type: {content.content_type!r}")
    message = _ENCODED_CONTENT(parameters=dict(content.parameters), content=content.content)
    message.type.authority_id = found["authority"]
    message.type.type_id = found["type"]
    message.type.version_major = int(found["major"])
    message.type.version_minor = int(found["minor"])
    if content.fallback is not None:
        message.fallback = content.fallback
    serialized: bytes = message.SerializeToString()
    return serialized


def decode(data: bytes, *, max_content_bytes: int = 16 * 1024 * 1024) -> EncodedContent:
    """Parses an envelope, decompressing its content (bounded by ``max_content_bytes``)
    when the sender compressed it, as XMTP allows."""
    message = _ENCODED_CONTENT()
    try:
        message.ParseFromString(data)
    except DecodeError as exc:
        raise AttachmentInvalid(f"not an EncodedContent: {exc}") from None
    kind = message.type
    content = bytes(message.content)
    if message.HasField("compression"):
        content = _decompress(content, int(message.compression), max_content_bytes)
    return EncodedContent(
        content_type=f"{kind.authority_id}/{kind.type_id}:{kind.version_major}."
                     f"{kind.version_minor}",
        parameters=dict(message.parameters), content=content,
        fallback=message.fallback if message.HasField("fallback") else None)


def _decompress(data: bytes, algorithm: int, limit: int) -> bytes:
    """zlib for DEFLATE (raw deflate too, as some clients send it), gzip for GZIP; never
    more than ``limit`` bytes out, however small the input."""
    if algorithm == GZIP:
        windows = [zlib.MAX_WBITS | 16]
    elif algorithm == DEFLATE:
        windows = [zlib.MAX_WBITS, -zlib.MAX_WBITS]
    else:
        raise AttachmentInvalid(f"unknown compression {algorithm}")
    for wbits in windows:
        inflater = zlib.decompressobj(wbits)
        try:
            out = inflater.decompress(data, limit + 1)
        except zlib.error:
            continue
        if len(out) > limit:
            raise AttachmentInvalid(f"decompressed content is over {limit} bytes")
        if inflater.eof:
            return out
    raise AttachmentInvalid("compressed content does not decompress")
