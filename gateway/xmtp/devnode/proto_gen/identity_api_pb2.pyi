from . import identity_associations_pb2 as _identity_associations_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class PublishIdentityUpdateRequest(_message.Message):
    __slots__ = ("identity_update",)
    IDENTITY_UPDATE_FIELD_NUMBER: _ClassVar[int]
    identity_update: _identity_associations_pb2.IdentityUpdate
    def __init__(self, identity_update: _Optional[_Union[_identity_associations_pb2.IdentityUpdate, _Mapping]] = ...) -> None: ...

class PublishIdentityUpdateResponse(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetIdentityUpdatesRequest(_message.Message):
    __slots__ = ("requests",)
    class Request(_message.Message):
        __slots__ = ("inbox_id", "sequence_id")
        INBOX_ID_FIELD_NUMBER: _ClassVar[int]
        SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
        inbox_id: str
        sequence_id: int
        def __init__(self, inbox_id: _Optional[str] = ..., sequence_id: _Optional[int] = ...) -> None: ...
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[GetIdentityUpdatesRequest.Request]
    def __init__(self, requests: _Optional[_Iterable[_Union[GetIdentityUpdatesRequest.Request, _Mapping]]] = ...) -> None: ...

class GetIdentityUpdatesResponse(_message.Message):
    __slots__ = ("responses",)
    class IdentityUpdateLog(_message.Message):
        __slots__ = ("sequence_id", "server_timestamp_ns", "update")
        SEQUENCE_ID_FIELD_NUMBER: _ClassVar[int]
        SERVER_TIMESTAMP_NS_FIELD_NUMBER: _ClassVar[int]
        UPDATE_FIELD_NUMBER: _ClassVar[int]
        sequence_id: int
        server_timestamp_ns: int
        update: _identity_associations_pb2.IdentityUpdate
        def __init__(self, sequence_id: _Optional[int] = ..., server_timestamp_ns: _Optional[int] = ..., update: _Optional[_Union[_identity_associations_pb2.IdentityUpdate, _Mapping]] = ...) -> None: ...
    class Response(_message.Message):
        __slots__ = ("inbox_id", "updates")
        INBOX_ID_FIELD_NUMBER: _ClassVar[int]
        UPDATES_FIELD_NUMBER: _ClassVar[int]
        inbox_id: str
        updates: _containers.RepeatedCompositeFieldContainer[GetIdentityUpdatesResponse.IdentityUpdateLog]
        def __init__(self, inbox_id: _Optional[str] = ..., updates: _Optional[_Iterable[_Union[GetIdentityUpdatesResponse.IdentityUpdateLog, _Mapping]]] = ...) -> None: ...
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[GetIdentityUpdatesResponse.Response]
    def __init__(self, responses: _Optional[_Iterable[_Union[GetIdentityUpdatesResponse.Response, _Mapping]]] = ...) -> None: ...

class GetInboxIdsRequest(_message.Message):
    __slots__ = ("requests",)
    class Request(_message.Message):
        __slots__ = ("identifier", "identifier_kind")
        IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
        IDENTIFIER_KIND_FIELD_NUMBER: _ClassVar[int]
        identifier: str
        identifier_kind: _identity_associations_pb2.IdentifierKind
        def __init__(self, identifier: _Optional[str] = ..., identifier_kind: _Optional[_Union[_identity_associations_pb2.IdentifierKind, str]] = ...) -> None: ...
    REQUESTS_FIELD_NUMBER: _ClassVar[int]
    requests: _containers.RepeatedCompositeFieldContainer[GetInboxIdsRequest.Request]
    def __init__(self, requests: _Optional[_Iterable[_Union[GetInboxIdsRequest.Request, _Mapping]]] = ...) -> None: ...

class GetInboxIdsResponse(_message.Message):
    __slots__ = ("responses",)
    class Response(_message.Message):
        __slots__ = ("identifier", "inbox_id", "identifier_kind")
        IDENTIFIER_FIELD_NUMBER: _ClassVar[int]
        INBOX_ID_FIELD_NUMBER: _ClassVar[int]
        IDENTIFIER_KIND_FIELD_NUMBER: _ClassVar[int]
        identifier: str
        inbox_id: str
        identifier_kind: _identity_associations_pb2.IdentifierKind
        def __init__(self, identifier: _Optional[str] = ..., inbox_id: _Optional[str] = ..., identifier_kind: _Optional[_Union[_identity_associations_pb2.IdentifierKind, str]] = ...) -> None: ...
    RESPONSES_FIELD_NUMBER: _ClassVar[int]
    responses: _containers.RepeatedCompositeFieldContainer[GetInboxIdsResponse.Response]
    def __init__(self, responses: _Optional[_Iterable[_Union[GetInboxIdsResponse.Response, _Mapping]]] = ...) -> None: ...
