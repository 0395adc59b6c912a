"""Bad input gets INVALID_ARGUMENT with a message, is not stored, and the node keeps
serving real clients."""

from __future__ import annotations

import secrets
from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest

from gateway.xmtp.client import XmtpClient
from gateway.xmtp.devnode import DevNode
from gateway.xmtp.devnode.proto_gen import identity_api_pb2 as identity_api
from gateway.xmtp.devnode.proto_gen import identity_api_pb2_grpc as identity_grpc
from gateway.xmtp.devnode.proto_gen import identity_associations_pb2 as assoc
from gateway.xmtp.devnode.proto_gen import mls_api_pb2 as mls
from gateway.xmtp.devnode.proto_gen import mls_api_pb2_grpc as mls_grpc

pytestmark = pytest.mark.e2e

MakeClient = Callable[..., Awaitable[XmtpClient]]  # the make_client fixture


@pytest.fixture
async def channel(devnode: DevNode) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"{devnode.host}:{devnode.port}") as ch:
        yield ch


async def rejected(call: Awaitable[object]) -> str:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details()
    assert details
    return details


class TestMalformedRequests:
    async def test_bad_input_is_refused_and_real_clients_carry_on(
            self, channel: grpc.aio.Channel, make_client: MakeClient) -> None:
        alice, bob = await make_client(), await make_client()
        dm = await alice.new_dm(bob.address)
        await dm.send_text("a real message")
        mls_api = mls_grpc.MlsApiStub(channel)
        group_id = bytes.fromhex(dm.id)
        stored = await mls_api.QueryGroupMessages(mls.QueryGroupMessagesRequest(group_id=group_id))
        real = stored.messages[-1].v1.data

        truncated = mls.SendGroupMessagesRequest(messages=[
            mls.GroupMessageInput(v1=mls.GroupMessageInput.V1(data=real[:12]))])
        assert "truncated" in await rejected(mls_api.SendGroupMessages(truncated))

        # a valid message and a bad one in the same batch: nothing of the batch is stored
        mixed = mls.SendGroupMessagesRequest(messages=[
            mls.GroupMessageInput(v1=mls.GroupMessageInput.V1(data=real + b"\x00")),
            mls.GroupMessageInput(v1=mls.GroupMessageInput.V1(data=b"\x00\x01\x00\x09"))])
        assert "messages[1]" in await rejected(mls_api.SendGroupMessages(mixed))

        garbage_key_package = mls.UploadKeyPackageRequest(
            key_package=mls.KeyPackageUpload(key_package_tls_serialized=secrets.token_bytes(40)))
        await rejected(mls_api.UploadKeyPackage(garbage_key_package))

        unknown_inbox = identity_api.PublishIdentityUpdateRequest(
            identity_update=assoc.IdentityUpdate(
                inbox_id="ab" * 32, client_timestamp_ns=1,
                actions=[assoc.IdentityAction(add=assoc.AddAssociation(
                    new_member_identifier=assoc.MemberIdentifier(
                        ethereum_address="0x" + "12" * 20)))]))
        identity = identity_grpc.IdentityApiStub(channel)
        assert "unknown inbox" in await rejected(identity.PublishIdentityUpdate(unknown_inbox))

        no_key = mls.SendWelcomeMessagesRequest(messages=[mls.WelcomeMessageInput(
            v1=mls.WelcomeMessageInput.V1(data=b"welcome"))])
        await rejected(mls_api.SendWelcomeMessages(no_key))

        empty_filter = mls_api.SubscribeGroupMessages(mls.SubscribeGroupMessagesRequest(
            filters=[mls.SubscribeGroupMessagesRequest.Filter(group_id=b"")]))
        assert "group_id" in await rejected(empty_filter.read())

        not_protobuf = channel.unary_unary(
            "/xmtp.mls.api.v1.MlsApi/QueryGroupMessages",
            request_serializer=lambda b: b, response_deserializer=lambda b: b)
        assert "undecodable" in await rejected(not_protobuf(b"\xff\xff\xff\xff"))

        after = await mls_api.QueryGroupMessages(mls.QueryGroupMessagesRequest(group_id=group_id))
        assert list(after.messages) == list(stored.messages)
        inbox_ids = await identity.GetInboxIds(identity_api.GetInboxIdsRequest(requests=[
            identity_api.GetInboxIdsRequest.Request(identifier="0x" + "12" * 20)]))
        assert not inbox_ids.responses[0].HasField("inbox_id")

        carol = await make_client(private_key=secrets.token_bytes(32))
        group = await carol.new_group([alice.address, bob.address])
        await group.send_text("still serving")
        await bob.sync_all()
        assert [m.text for m in await bob.conversation(group.id).messages()] == ["still serving"]
        await bob.conversation(dm.id).send_text("and the old dm too")
        await alice.sync_all()
        assert [m.text for m in await alice.conversation(dm.id).messages()] == [
            "a real message", "and the old dm too"]
