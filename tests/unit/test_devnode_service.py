"""The devnode's gRPC behaviour as libxmtp relies on it, driven with plain grpc stubs:
paging, subscriptions (metadata, replay, live, bounded), welcomes, key packages, identity."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc
import pytest

from gateway.xmtp.devnode import DevNode
from gateway.xmtp.devnode.proto_gen import identity_api_pb2 as identity_api
from gateway.xmtp.devnode.proto_gen import identity_api_pb2_grpc as identity_grpc
from gateway.xmtp.devnode.proto_gen import identity_associations_pb2 as assoc
from gateway.xmtp.devnode.proto_gen import mls_api_pb2 as mls
from gateway.xmtp.devnode.proto_gen import mls_api_pb2_grpc as mls_grpc
from gateway.xmtp.devnode.proto_gen import mls_message_contents_pb2 as contents
from gateway.xmtp.devnode.subscriptions import Hub

ASC, DESC = mls.SORT_DIRECTION_ASCENDING, mls.SORT_DIRECTION_DESCENDING


def mls_message(group: bytes, n: int, *, commit: bool = False) -> bytes:
    return (b"\x00\x01\x00\x02" + bytes([len(group)]) + group + bytes(8)
            + (b"\x03" if commit else b"\x01") + f"ciphertext {n}".encode())


def send_request(*payloads: bytes) -> mls.SendGroupMessagesRequest:
    return mls.SendGroupMessagesRequest(messages=[
        mls.GroupMessageInput(v1=mls.GroupMessageInput.V1(data=p, sender_hmac=b"hmac"))
        for p in payloads])


@pytest.fixture
async def node() -> AsyncIterator[DevNode]:
    async with DevNode.start(subscriber_capacity=4) as running:
        yield running


@pytest.fixture
async def api(node: DevNode) -> AsyncIterator[mls_grpc.MlsApiStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel:
        yield mls_grpc.MlsApiStub(channel)


@pytest.fixture
async def identity(node: DevNode) -> AsyncIterator[identity_grpc.IdentityApiStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel:
        yield identity_grpc.IdentityApiStub(channel)


async def query(api: mls_grpc.MlsApiStub, group: bytes, direction: int, limit: int,
                cursor: int = 0) -> mls.QueryGroupMessagesResponse:
    return await api.QueryGroupMessages(mls.QueryGroupMessagesRequest(
        group_id=group,
        paging_info=mls.PagingInfo(direction=direction, limit=limit, id_cursor=cursor)))


class TestPaging:
    async def test_pages_carry_a_cursor_only_when_full_and_clients_page_until_short(
            self, api: mls_grpc.MlsApiStub) -> None:
        await api.SendGroupMessages(send_request(*(mls_message(b"g", i) for i in range(5))))
        seen: list[int] = []
        cursor, pages = 0, 0
        while True:
            page = await query(api, b"g", ASC, 2, cursor)
            pages += 1
            seen += [m.v1.id for m in page.messages]
            if len(page.messages) < 2:
                assert page.paging_info.id_cursor == 0
                break
            assert page.paging_info.id_cursor == page.messages[-1].v1.id
            cursor = page.paging_info.id_cursor
        assert pages == 3 and len(seen) == 5 and seen == sorted(seen)

        newest_two = await query(api, b"g", DESC, 2)
        assert [m.v1.id for m in newest_two.messages] == seen[:-3:-1]
        older = await query(api, b"g", DESC, 10, newest_two.paging_info.id_cursor)
        assert [m.v1.id for m in older.messages] == seen[2::-1]
        assert older.paging_info.id_cursor == 0
        everything = await query(api, b"g", 0, 0)  # unspecified: ascending, limit 100
        assert [m.v1.id for m in everything.messages] == seen
        assert everything.paging_info.limit == 100

    async def test_a_message_keeps_its_header_facts_and_a_duplicate_is_stored_once(
            self, api: mls_grpc.MlsApiStub) -> None:
        await api.SendGroupMessages(send_request(mls_message(b"g", 1, commit=True)))
        await api.SendGroupMessages(send_request(mls_message(b"g", 1, commit=True)))
        [stored] = (await query(api, b"g", ASC, 10)).messages
        assert (stored.v1.group_id, stored.v1.is_commit, stored.v1.sender_hmac) == (
            b"g", True, b"hmac")
        assert stored.v1.created_ns > 0

    async def test_the_newest_message_is_given_per_group_with_content_only_if_asked(
            self, api: mls_grpc.MlsApiStub) -> None:
        await api.SendGroupMessages(send_request(mls_message(b"a", 1), mls_message(b"a", 2)))
        request = mls.GetNewestGroupMessageRequest(group_ids=[b"a", b"none"])
        bare = await api.GetNewestGroupMessage(request)
        assert bare.responses[0].group_message.v1.data == b""
        assert not bare.responses[1].HasField("group_message")
        request.include_content = True
        full = await api.GetNewestGroupMessage(request)
        assert full.responses[0].group_message.v1.data == mls_message(b"a", 2)


class TestSubscriptions:
    async def test_a_subscription_sends_headers_then_history_after_the_cursor_then_live(
            self, api: mls_grpc.MlsApiStub) -> None:
        call = api.SubscribeGroupMessages(mls.SubscribeGroupMessagesRequest(filters=[
            mls.SubscribeGroupMessagesRequest.Filter(group_id=b"quiet")]))
        await asyncio.wait_for(call.initial_metadata(), 2)  # before any message exists
        call.cancel()

        await api.SendGroupMessages(send_request(*(mls_message(b"a", i) for i in range(3))))
        await api.SendGroupMessages(send_request(mls_message(b"b", 0)))
        first_a = (await query(api, b"a", ASC, 1)).messages[0].v1.id
        call = api.SubscribeGroupMessages(mls.SubscribeGroupMessagesRequest(filters=[
            mls.SubscribeGroupMessagesRequest.Filter(group_id=b"a", id_cursor=first_a),
            mls.SubscribeGroupMessagesRequest.Filter(group_id=b"b")]))
        replayed = [await asyncio.wait_for(call.read(), 2) for _ in range(3)]
        assert sorted((m.v1.group_id, m.v1.data) for m in replayed) == sorted([
            (b"a", mls_message(b"a", 1)), (b"a", mls_message(b"a", 2)),
            (b"b", mls_message(b"b", 0))])
        await api.SendGroupMessages(send_request(mls_message(b"b", 1), mls_message(b"c", 0),
                                                 mls_message(b"a", 3)))
        live = [await asyncio.wait_for(call.read(), 2) for _ in range(2)]
        assert [m.v1.data for m in live] == [mls_message(b"b", 1), mls_message(b"a", 3)]
        for group in (b"a", b"b"):
            ids = [m.v1.id for m in replayed + live if m.v1.group_id == group]
            assert ids == sorted(set(ids))
        call.cancel()

    async def test_a_slow_subscriber_loses_nothing_and_its_queue_stays_bounded(
            self, api: mls_grpc.MlsApiStub) -> None:
        call = api.SubscribeGroupMessages(mls.SubscribeGroupMessagesRequest(filters=[
            mls.SubscribeGroupMessagesRequest.Filter(group_id=b"busy")]))
        await call.initial_metadata()
        await asyncio.sleep(0.05)  # let the stream reach its live phase
        # one batch of 30 is fanned out at once, past this node's capacity of 4 per
        # subscriber: the queue is dropped and the stream catches up from the database
        await api.SendGroupMessages(send_request(*(mls_message(b"busy", i) for i in range(30))))
        await api.SendGroupMessages(send_request(mls_message(b"busy", 30)))
        received = [await asyncio.wait_for(call.read(), 2) for _ in range(31)]
        assert [m.v1.data for m in received] == [mls_message(b"busy", i) for i in range(31)]
        call.cancel()

    async def test_an_overflowing_subscriber_drops_its_queue_and_is_told_to_catch_up(
            self) -> None:
        hub: Hub[int] = Hub(capacity=3)
        with hub.subscribe([b"t"]) as subscriber:
            for i in range(10):
                hub.publish(b"t", i)
            wakeup = await subscriber.wait()
            assert wakeup.overflowed and wakeup.items == []
            hub.publish(b"t", 11)
            assert (await subscriber.wait()).items == [11]
        assert hub.subscriber_count() == 0

    async def test_welcomes_stream_per_installation_in_both_forms(
            self, api: mls_grpc.MlsApiStub) -> None:
        call = api.SubscribeWelcomeMessages(mls.SubscribeWelcomeMessagesRequest(filters=[
            mls.SubscribeWelcomeMessagesRequest.Filter(installation_key=b"me")]))
        await call.initial_metadata()
        await api.SendWelcomeMessages(mls.SendWelcomeMessagesRequest(messages=[
            mls.WelcomeMessageInput(v1=mls.WelcomeMessageInput.V1(
                installation_key=b"someone else", data=b"not for me")),
            mls.WelcomeMessageInput(v1=mls.WelcomeMessageInput.V1(
                installation_key=b"me", data=b"welcome", hpke_public_key=b"hpke",
                wrapper_algorithm=contents.WELCOME_WRAPPER_ALGORITHM_CURVE25519,
                welcome_metadata=b"meta")),
            mls.WelcomeMessageInput(welcome_pointer=mls.WelcomeMessageInput.WelcomePointer(
                installation_key=b"me", welcome_pointer=b"pointer",
                wrapper_algorithm=contents.WELCOME_POINTER_WRAPPER_ALGORITHM_XWING_MLKEM_768_DRAFT_6)),
        ]))
        first, second = [await asyncio.wait_for(call.read(), 2) for _ in range(2)]
        assert (first.v1.data, first.v1.welcome_metadata, first.v1.wrapper_algorithm) == (
            b"welcome", b"meta", contents.WELCOME_WRAPPER_ALGORITHM_CURVE25519)
        assert second.welcome_pointer.welcome_pointer == b"pointer"
        assert second.welcome_pointer.id > first.v1.id
        queried = await api.QueryWelcomeMessages(mls.QueryWelcomeMessagesRequest(
            installation_key=b"me"))
        assert list(queried.messages) == [first, second]
        call.cancel()


class TestKeyPackagesAndIdentity:
    async def test_key_packages_come_back_in_request_order_with_gaps_empty(
            self, api: mls_grpc.MlsApiStub) -> None:
        def key_package(key: bytes, tail: bytes) -> bytes:
            return b"\x00\x01\x00\x01\x02ik\x02ek" + bytes([len(key)]) + key + tail

        for kp in (key_package(b"K1", b"old"), key_package(b"K1", b"new"),
                   key_package(b"K2", b"x")):
            await api.UploadKeyPackage(mls.UploadKeyPackageRequest(
                key_package=mls.KeyPackageUpload(key_package_tls_serialized=kp)))
        fetched = await api.FetchKeyPackages(mls.FetchKeyPackagesRequest(
            installation_keys=[b"K2", b"nobody", b"K1"]))
        assert [k.key_package_tls_serialized for k in fetched.key_packages] == [
            key_package(b"K2", b"x"), b"", key_package(b"K1", b"new")]

    async def test_an_inbox_is_found_by_address_until_the_address_is_revoked(
            self, identity: identity_grpc.IdentityApiStub) -> None:
        inbox, address = "ab" * 32, "0x" + "Cd" * 20

        async def publish(*actions: assoc.IdentityAction) -> None:
            await identity.PublishIdentityUpdate(identity_api.PublishIdentityUpdateRequest(
                identity_update=assoc.IdentityUpdate(inbox_id=inbox, actions=actions)))

        async def lookup() -> identity_api.GetInboxIdsResponse.Response:
            response = await identity.GetInboxIds(identity_api.GetInboxIdsRequest(requests=[
                identity_api.GetInboxIdsRequest.Request(
                    identifier=address.lower(),
                    identifier_kind=assoc.IDENTIFIER_KIND_ETHEREUM)]))
            return response.responses[0]

        await publish(assoc.IdentityAction(create_inbox=assoc.CreateInbox(
            initial_identifier=address, nonce=1,
            initial_identifier_kind=assoc.IDENTIFIER_KIND_ETHEREUM)))
        assert (await lookup()).inbox_id == inbox
        await publish(assoc.IdentityAction(revoke=assoc.RevokeAssociation(
            member_to_revoke=assoc.MemberIdentifier(ethereum_address=address))))
        answer = await lookup()
        assert not answer.HasField("inbox_id") and answer.identifier == address.lower()

        updates = await identity.GetIdentityUpdates(identity_api.GetIdentityUpdatesRequest(
            requests=[identity_api.GetIdentityUpdatesRequest.Request(inbox_id=inbox),
                      identity_api.GetIdentityUpdatesRequest.Request(inbox_id="cd" * 32)]))
        log = updates.responses[0].updates
        assert [u.update.actions[0].WhichOneof("kind") for u in log] == ["create_inbox", "revoke"]
        assert log[0].sequence_id < log[1].sequence_id
        assert list(updates.responses[1].updates) == []
        later = await identity.GetIdentityUpdates(identity_api.GetIdentityUpdatesRequest(
            requests=[identity_api.GetIdentityUpdatesRequest.Request(
                inbox_id=inbox, sequence_id=log[0].sequence_id)]))
        assert [u.sequence_id for u in later.responses[0].updates] == [log[1].sequence_id]

    async def test_commit_log_entries_are_kept_per_group_in_order(
            self, api: mls_grpc.MlsApiStub) -> None:
        signature = assoc.RecoverableEd25519Signature(bytes=b"sig", public_key=b"pub")
        await api.BatchPublishCommitLog(mls.BatchPublishCommitLogRequest(requests=[
            mls.PublishCommitLogRequest(group_id=b"g", serialized_commit_log_entry=e,
                                        signature=signature) for e in (b"e1", b"e2")]))
        result = await api.BatchQueryCommitLog(mls.BatchQueryCommitLogRequest(requests=[
            mls.QueryCommitLogRequest(group_id=b"g"), mls.QueryCommitLogRequest(group_id=b"x")]))
        entries = result.responses[0].commit_log_entries
        assert [e.serialized_commit_log_entry for e in entries] == [b"e1", b"e2"]
        assert entries[0].signature == signature and entries[0].sequence_id < entries[1].sequence_id
        assert list(result.responses[1].commit_log_entries) == []
