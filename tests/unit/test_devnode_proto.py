"""Our own .proto definitions agree with the ones libxmtp was built with.

``libxmtpv3.so`` (the pinned xmtp_bindings package) embeds its FileDescriptorSet; each
FileDescriptorProto in it is found by its serialized shape. Every message, field, enum
value and method of ours must exist there with the same number, type and shape.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import xmtp_bindings
from google.protobuf import descriptor_pb2
from google.protobuf.internal.decoder import _DecodeVarint  # type: ignore[attr-defined]
from google.protobuf.message import DecodeError

from gateway.xmtp.devnode.proto_gen import (
    identity_api_pb2,
    identity_associations_pb2,
    mls_api_pb2,
    mls_message_contents_pb2,
)

OURS = [identity_associations_pb2, identity_api_pb2, mls_message_contents_pb2, mls_api_pb2]
Field = descriptor_pb2.FieldDescriptorProto


def embedded_files() -> dict[str, descriptor_pb2.FileDescriptorProto]:
    data = (Path(xmtp_bindings.__file__).parent / "libxmtpv3.so").read_bytes()
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    # a FileDescriptorProto starts with field 1 (name): 0x0a, length, "...proto"
    for match in re.finditer(rb"\x0a[\x01-\x7f][a-z0-9_/]+\.proto", data):
        start = match.start()
        # it is itself field 1 of the FileDescriptorSet: 0x0a, varint length, then itself
        for back in range(2, 6):
            if data[start - back] != 0x0A:
                continue
            try:
                length, body = _DecodeVarint(data, start - back + 1)
            except (DecodeError, IndexError):
                continue
            if body != start:
                continue
            fd = descriptor_pb2.FileDescriptorProto()
            try:
                fd.ParseFromString(data[start:start + length])
            except DecodeError:
                continue
            files.setdefault(fd.name, fd)
    return files


def index(files: list[descriptor_pb2.FileDescriptorProto]) -> dict[str, object]:
    """Fully qualified name -> DescriptorProto / EnumDescriptorProto / ServiceDescriptorProto."""
    out: dict[str, object] = {}

    def add_messages(prefix: str, messages: list[descriptor_pb2.DescriptorProto]) -> None:
        for m in messages:
            out[f"{prefix}.{m.name}"] = m
            add_messages(f"{prefix}.{m.name}", list(m.nested_type))
            for e in m.enum_type:
                out[f"{prefix}.{m.name}.{e.name}"] = e

    for fd in files:
        add_messages(f".{fd.package}", list(fd.message_type))
        for e in fd.enum_type:
            out[f".{fd.package}.{e.name}"] = e
        for s in fd.service:
            out[f".{fd.package}.{s.name}"] = s
    return out


def our_files() -> list[descriptor_pb2.FileDescriptorProto]:
    files = []
    for module in OURS:
        fd = descriptor_pb2.FileDescriptorProto()
        module.DESCRIPTOR.CopyToProto(fd)
        files.append(fd)
    return files


@pytest.fixture(scope="module")
def theirs() -> dict[str, object]:
    files = embedded_files()
    assert "mls/api/v1/mls.proto" in files and "identity/api/v1/identity.proto" in files
    return index(list(files.values()))


def oneof_of(message: descriptor_pb2.DescriptorProto, field: Field) -> str | None:
    if not field.HasField("oneof_index"):
        return None
    return message.oneof_decl[field.oneof_index].name


def field_differences(name: str, ours: descriptor_pb2.DescriptorProto,
                      theirs: descriptor_pb2.DescriptorProto) -> list[str]:
    by_name = {f.name: f for f in theirs.field}
    problems = []
    for field in ours.field:
        other = by_name.get(field.name)
        where = f"{name}.{field.name}"
        if other is None:
            problems.append(f"{where}: not in libxmtp's schema")
            continue
        for aspect in ("number", "type", "label", "type_name", "proto3_optional"):
            if getattr(field, aspect) != getattr(other, aspect):
                problems.append(f"{where}: {aspect} {getattr(field, aspect)!r} != "
                                f"{getattr(other, aspect)!r}")
        if oneof_of(ours, field) != oneof_of(theirs, other):
            problems.append(f"{where}: oneof {oneof_of(ours, field)} != {oneof_of(theirs, other)}")
    return problems


class TestProtoDefinitionsMatchLibxmtp:
    def test_the_embedded_schema_is_found(self, theirs: dict[str, object]) -> None:
        assert ".xmtp.mls.api.v1.MlsApi" in theirs
        assert ".xmtp.identity.api.v1.IdentityApi" in theirs

    def test_every_field_has_libxmtps_number_type_and_shape(
            self, theirs: dict[str, object]) -> None:
        problems: list[str] = []
        checked = 0
        for name, ours in index(our_files()).items():
            other = theirs.get(name)
            if other is None:
                problems.append(f"{name}: not in libxmtp's schema")
            elif isinstance(ours, descriptor_pb2.DescriptorProto):
                assert isinstance(other, descriptor_pb2.DescriptorProto)
                problems += field_differences(name, ours, other)
                checked += len(ours.field)
            elif isinstance(ours, descriptor_pb2.EnumDescriptorProto):
                assert isinstance(other, descriptor_pb2.EnumDescriptorProto)
                values = {v.name: v.number for v in other.value}
                problems += [f"{name}.{v.name}: {v.number} != {values.get(v.name)}"
                             for v in ours.value if values.get(v.name) != v.number]
        assert problems == []
        assert checked > 100  # the comparison really looked at our fields

    def test_every_method_has_libxmtps_request_response_and_streaming(
            self, theirs: dict[str, object]) -> None:
        for service in (".xmtp.mls.api.v1.MlsApi", ".xmtp.identity.api.v1.IdentityApi"):
            ours = index(our_files())[service]
            other = theirs[service]
            assert isinstance(ours, descriptor_pb2.ServiceDescriptorProto)
            assert isinstance(other, descriptor_pb2.ServiceDescriptorProto)
            methods = {m.name: m for m in other.method}
            for method in ours.method:
                them = methods[method.name]
                assert (method.input_type, method.output_type, method.server_streaming,
                        method.client_streaming) == (
                    them.input_type, them.output_type, them.server_streaming,
                    them.client_streaming), method.name

    def test_a_mismatch_would_be_reported(self, theirs: dict[str, object]) -> None:
        ours = index(our_files())[".xmtp.mls.api.v1.PagingInfo"]
        assert isinstance(ours, descriptor_pb2.DescriptorProto)
        broken = descriptor_pb2.DescriptorProto()
        broken.CopyFrom(ours)
        broken.field[2].number = 9
        other = theirs[".xmtp.mls.api.v1.PagingInfo"]
        assert isinstance(other, descriptor_pb2.DescriptorProto)
        assert field_differences("PagingInfo", broken, other) == [
            "PagingInfo.id_cursor: number 9 != 3"]
