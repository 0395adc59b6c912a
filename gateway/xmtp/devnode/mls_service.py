"""``xmtp.mls.api.v1.MlsApi``: key packages, welcomes and group messages, stored and
forwarded. Ciphertexts are opaque; only the MLS header is read (see ``mls_wire``)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from typing import TypeVar

import grpc
from google.protobuf import empty_pb2

from gateway.errors import BadRequest
from gateway.xmtp.devnode import rpc
from gateway.xmtp.devnode.mls_wire import key_package_installation_key, parse_group_message
from gateway.xmtp.devnode.proto_gen import identity_associations_pb2 as assoc
from gateway.xmtp.devnode.proto_gen import mls_api_pb2 as api
from gateway.xmtp.devnode.proto_gen import mls_message_contents_pb2 as contents
from gateway.xmtp.devnode.storage import (
    DevNodeStorage,
    NewGroupMessage,
    NewWelcome,
    Page,
    StoredGroupMessage,
    StoredWelcome,
    WelcomeKind,
)
from gateway.xmtp.devnode.subscriptions import Hub

SERVICE = "xmtp.mls.api.v1.MlsApi"
DEFAULT_PAGE_LIMIT = 100
_REPLAY_PAGE = 100

_Row = TypeVar("_Row", StoredGroupMessage, StoredWelcome)
_Out = TypeVar("_Out", api.GroupMessage, api.WelcomeMessage)


def _page(paging: api.PagingInfo) -> Page:
    return Page(descending=paging.direction == api.SORT_DIRECTION_DESCENDING,
                cursor=paging.id_cursor, limit=paging.limit or DEFAULT_PAGE_LIMIT)


def _paging_info(paging: api.PagingInfo, page: Page, ids: list[int]) -> api.PagingInfo:
    # the reference node sets the cursor only on a full page; clients page until a short one
    cursor = ids[-1] if ids and len(ids) == page.limit else 0
    return api.PagingInfo(direction=paging.direction, limit=page.limit, id_cursor=cursor)


def group_message_proto(m: StoredGroupMessage, *, with_content: bool = True) -> api.GroupMessage:
    return api.GroupMessage(v1=api.GroupMessage.V1(
        id=m.id, created_ns=m.created_ns, group_id=m.group_id,
        data=m.data if with_content else b"", sender_hmac=m.sender_hmac,
        should_push=m.should_push, is_commit=m.is_commit))


def welcome_proto(w: StoredWelcome) -> api.WelcomeMessage:
    if w.kind is WelcomeKind.POINTER:
        return api.WelcomeMessage(welcome_pointer=api.WelcomeMessage.WelcomePointer(
            id=w.id, created_ns=w.created_ns, installation_key=w.installation_key,
            welcome_pointer=w.data, hpke_public_key=w.hpke_public_key,
            wrapper_algorithm=w.wrapper_algorithm))  # type: ignore[arg-type]
    return api.WelcomeMessage(v1=api.WelcomeMessage.V1(
        id=w.id, created_ns=w.created_ns, installation_key=w.installation_key, data=w.data,
        hpke_public_key=w.hpke_public_key,
        wrapper_algorithm=w.wrapper_algorithm,  # type: ignore[arg-type]
        welcome_metadata=w.welcome_metadata))


def _new_group_message(index: int, m: api.GroupMessageInput) -> NewGroupMessage:
    if m.WhichOneof("version") != "v1":
        raise BadRequest(f"messages[{index}]: no v1 message")
    if not m.v1.data:
        raise BadRequest(f"messages[{index}]: empty data")
    try:
        header = parse_group_message(m.v1.data)
    except BadRequest as exc:
        raise BadRequest(f"messages[{index}]: {exc}") from None
    return NewGroupMessage(group_id=header.group_id, data=m.v1.data,
                           sender_hmac=m.v1.sender_hmac, should_push=m.v1.should_push,
                           is_commit=header.is_commit)


def _new_welcome(index: int, m: api.WelcomeMessageInput) -> NewWelcome:
    version = m.WhichOneof("version")
    if version == "v1":
        welcome = NewWelcome(WelcomeKind.V1, m.v1.installation_key, m.v1.data,
                             m.v1.hpke_public_key, m.v1.wrapper_algorithm, m.v1.welcome_metadata)
    elif version == "welcome_pointer":
        p = m.welcome_pointer
        welcome = NewWelcome(WelcomeKind.POINTER, p.installation_key, p.welcome_pointer,
                             p.hpke_public_key, p.wrapper_algorithm, b"")
    else:
        raise BadRequest(f"messages[{index}]: no welcome (v1 or welcome_pointer)")
    if not welcome.installation_key or not welcome.data:
        raise BadRequest(f"messages[{index}]: installation key and welcome data are required")
    return welcome


class MlsService:
    def __init__(self, storage: DevNodeStorage, groups: Hub[StoredGroupMessage],
                 welcomes: Hub[StoredWelcome]) -> None:
        self._storage = storage
        self._groups = groups
        self._welcomes = welcomes

    def handler(self) -> grpc.GenericRpcHandler:
        u, s = rpc.unary, rpc.server_stream
        return grpc.method_handlers_generic_handler(SERVICE, {
            "SendGroupMessages": u(
                "SendGroupMessages", api.SendGroupMessagesRequest, self.send_group_messages),
            "SendWelcomeMessages": u(
                "SendWelcomeMessages", api.SendWelcomeMessagesRequest, self.send_welcome_messages),
            "UploadKeyPackage": u(
                "UploadKeyPackage", api.UploadKeyPackageRequest, self.upload_key_package),
            "FetchKeyPackages": u(
                "FetchKeyPackages", api.FetchKeyPackagesRequest, self.fetch_key_packages),
            "QueryGroupMessages": u(
                "QueryGroupMessages", api.QueryGroupMessagesRequest, self.query_group_messages),
            "QueryWelcomeMessages": u(
                "QueryWelcomeMessages", api.QueryWelcomeMessagesRequest,
                self.query_welcome_messages),
            "GetNewestGroupMessage": u(
                "GetNewestGroupMessage", api.GetNewestGroupMessageRequest,
                self.get_newest_group_message),
            "BatchPublishCommitLog": u(
                "BatchPublishCommitLog", api.BatchPublishCommitLogRequest,
                self.batch_publish_commit_log),
            "BatchQueryCommitLog": u(
                "BatchQueryCommitLog", api.BatchQueryCommitLogRequest,
                self.batch_query_commit_log),
            "SubscribeGroupMessages": s(
                "SubscribeGroupMessages", api.SubscribeGroupMessagesRequest,
                self.subscribe_group_messages),
            "SubscribeWelcomeMessages": s(
                "SubscribeWelcomeMessages", api.SubscribeWelcomeMessagesRequest,
                self.subscribe_welcome_messages),
        })

    # --- key packages --------------------------------------------------------------

    async def upload_key_package(self, request: api.UploadKeyPackageRequest) -> empty_pb2.Empty:
        key_package = request.key_package.key_package_tls_serialized
        if not key_package:
            raise BadRequest("key_package.key_package_tls_serialized is empty")
        self._storage.put_key_package(key_package_installation_key(key_package), key_package)
        return empty_pb2.Empty()

    async def fetch_key_packages(
        self, request: api.FetchKeyPackagesRequest,
    ) -> api.FetchKeyPackagesResponse:
        response = api.FetchKeyPackagesResponse()
        for key in request.installation_keys:
            response.key_packages.add(key_package_tls_serialized=self._storage.key_package(key)
                                      or b"")
        return response

    # --- sending -------------------------------------------------------------------

    async def send_group_messages(self, request: api.SendGroupMessagesRequest) -> empty_pb2.Empty:
        batch = [_new_group_message(i, m) for i, m in enumerate(request.messages)]
        for stored in self._storage.add_group_messages(batch):
            self._groups.publish(stored.group_id, stored)
        return empty_pb2.Empty()

    async def send_welcome_messages(
        self, request: api.SendWelcomeMessagesRequest,
    ) -> empty_pb2.Empty:
        batch = [_new_welcome(i, m) for i, m in enumerate(request.messages)]
        for stored in self._storage.add_welcomes(batch):
            self._welcomes.publish(stored.installation_key, stored)
        return empty_pb2.Empty()

    # --- queries -------------------------------------------------------------------

    async def query_group_messages(
        self, request: api.QueryGroupMessagesRequest,
    ) -> api.QueryGroupMessagesResponse:
        if not request.group_id:
            raise BadRequest("group_id is empty")
        page = _page(request.paging_info)
        rows = self._storage.group_messages(request.group_id, page)
        return api.QueryGroupMessagesResponse(
            messages=[group_message_proto(m) for m in rows],
            paging_info=_paging_info(request.paging_info, page, [m.id for m in rows]))

    async def query_welcome_messages(
        self, request: api.QueryWelcomeMessagesRequest,
    ) -> api.QueryWelcomeMessagesResponse:
        if not request.installation_key:
            raise BadRequest("installation_key is empty")
        page = _page(request.paging_info)
        rows = self._storage.welcomes(request.installation_key, page)
        return api.QueryWelcomeMessagesResponse(
            messages=[welcome_proto(w) for w in rows],
            paging_info=_paging_info(request.paging_info, page, [w.id for w in rows]))

    async def get_newest_group_message(
        self, request: api.GetNewestGroupMessageRequest,
    ) -> api.GetNewestGroupMessageResponse:
        response = api.GetNewestGroupMessageResponse()
        for group_id in request.group_ids:
            newest = self._storage.newest_group_message(group_id)
            answer = response.responses.add()
            if newest is not None:
                answer.group_message.CopyFrom(
                    group_message_proto(newest, with_content=request.include_content))
        return response

    # --- commit log ----------------------------------------------------------------

    async def batch_publish_commit_log(
        self, request: api.BatchPublishCommitLogRequest,
    ) -> empty_pb2.Empty:
        entries = []
        for i, r in enumerate(request.requests):
            if not r.group_id or not r.serialized_commit_log_entry:
                raise BadRequest(f"requests[{i}]: group_id and the entry are required")
            entries.append((r.group_id, r.serialized_commit_log_entry,
                            r.signature.SerializeToString()))
        self._storage.add_commit_log_entries(entries)
        return empty_pb2.Empty()

    async def batch_query_commit_log(
        self, request: api.BatchQueryCommitLogRequest,
    ) -> api.BatchQueryCommitLogResponse:
        response = api.BatchQueryCommitLogResponse()
        for r in request.requests:
            page = _page(r.paging_info)
            rows = self._storage.commit_log(r.group_id, page)
            response.responses.add(
                group_id=r.group_id,
                commit_log_entries=[contents.CommitLogEntry(
                    sequence_id=row.id, serialized_commit_log_entry=row.entry,
                    signature=assoc.RecoverableEd25519Signature.FromString(row.signature))
                    for row in rows],
                paging_info=_paging_info(r.paging_info, page, [row.id for row in rows]))
        return response

    # --- subscriptions -------------------------------------------------------------

    def subscribe_group_messages(
        self, request: api.SubscribeGroupMessagesRequest,
    ) -> AsyncIterator[api.GroupMessage]:
        cursors: dict[bytes, int] = {}
        for i, f in enumerate(request.filters):
            if not f.group_id:
                raise BadRequest(f"filters[{i}]: group_id is empty")
            cursors[f.group_id] = max(f.id_cursor, cursors.get(f.group_id, 0))
        return _stream(self._groups, cursors, self._storage.group_messages,
                       lambda m: m.group_id, group_message_proto)

    def subscribe_welcome_messages(
        self, request: api.SubscribeWelcomeMessagesRequest,
    ) -> AsyncIterator[api.WelcomeMessage]:
        cursors: dict[bytes, int] = {}
        for i, f in enumerate(request.filters):
            if not f.installation_key:
                raise BadRequest(f"filters[{i}]: installation_key is empty")
            cursors[f.installation_key] = max(f.id_cursor, cursors.get(f.installation_key, 0))
        return _stream(self._welcomes, cursors, self._storage.welcomes,
                       lambda w: w.installation_key, welcome_proto)


async def _stream(
    hub: Hub[_Row], cursors: Mapping[bytes, int],
    read: Callable[[bytes, Page], list[_Row]],
    topic_of: Callable[[_Row], bytes],
    to_proto: Callable[[_Row], _Out],
) -> AsyncIterator[_Out]:
    """History after each topic's cursor, then live items; ids only grow per topic.

    The subscription opens before the history is read, so nothing stored in between is
    missed; items seen in both are sent once thanks to the per-topic cursor.
    """
    sent_up_to = dict(cursors)
    with hub.subscribe(sent_up_to) as subscriber:
        replay = True
        while True:
            if replay:
                for topic in sent_up_to:
                    while True:
                        rows = read(topic, Page(descending=False, cursor=sent_up_to[topic],
                                                limit=_REPLAY_PAGE))
                        for row in rows:
                            sent_up_to[topic] = row.id
                            yield to_proto(row)
                        if len(rows) < _REPLAY_PAGE:
                            break
            wakeup = await subscriber.wait()
            replay = wakeup.overflowed
            for row in wakeup.items:
                topic = topic_of(row)
                if row.id > sent_up_to[topic]:
                    sent_up_to[topic] = row.id
                    yield to_proto(row)
