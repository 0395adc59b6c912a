"""The devnode's inbox caps (off unless asked for), driven with plain grpc stubs: the
installations it counts from identity updates, XMTP's 10 and 256, and the words and
status codes it refuses with; plus the answer to a method it does not serve."""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator

import grpc
import pytest

from gateway.cli import build_parser
from gateway.xmtp.devnode import DevNode
from gateway.xmtp.devnode.identity_service import InboxLimits
from gateway.xmtp.devnode.proto_gen import identity_api_pb2 as identity_api
from gateway.xmtp.devnode.proto_gen import identity_api_pb2_grpc as identity_grpc
from gateway.xmtp.devnode.proto_gen import identity_associations_pb2 as assoc

INBOX = "ab" * 32
ADDRESS = "0x" + "cd" * 20
_keys = itertools.count(1)


def new_key() -> bytes:
    return next(_keys).to_bytes(32, "big")


def create_inbox(installation: bytes) -> list[assoc.IdentityAction]:
    return [
        assoc.IdentityAction(create_inbox=assoc.CreateInbox(
            initial_identifier=ADDRESS, nonce=1,
            initial_identifier_kind=assoc.IDENTIFIER_KIND_ETHEREUM)),
        add(installation),
    ]


def add(installation: bytes) -> assoc.IdentityAction:
    return assoc.IdentityAction(add=assoc.AddAssociation(
        new_member_identifier=assoc.MemberIdentifier(installation_public_key=installation)))


def revoke(installation: bytes) -> assoc.IdentityAction:
    return assoc.IdentityAction(revoke=assoc.RevokeAssociation(
        member_to_revoke=assoc.MemberIdentifier(installation_public_key=installation)))


class Inbox:
    """One inbox's identity log, written through the node's IdentityApi."""

    def __init__(self, stub: identity_grpc.IdentityApiStub) -> None:
        self._stub = stub
        self._timestamp = itertools.count(1)

    async def publish(self, *actions: assoc.IdentityAction) -> None:
        await self._stub.PublishIdentityUpdate(identity_api.PublishIdentityUpdateRequest(
            identity_update=assoc.IdentityUpdate(
                inbox_id=INBOX, actions=actions, client_timestamp_ns=next(self._timestamp))))

    async def refused(self, *actions: assoc.IdentityAction) -> grpc.aio.AioRpcError:
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await self.publish(*actions)
        return caught.value

    async def log_length(self) -> int:
        response = await self._stub.GetIdentityUpdates(identity_api.GetIdentityUpdatesRequest(
            requests=[identity_api.GetIdentityUpdatesRequest.Request(inbox_id=INBOX)]))
        return len(response.responses[0].updates)


async def inbox_on(limits: InboxLimits | None) -> AsyncIterator[Inbox]:
    async with DevNode.start(limits=limits) as node, \
            grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel:
        yield Inbox(identity_grpc.IdentityApiStub(channel))


@pytest.fixture
async def capped() -> AsyncIterator[Inbox]:
    async for inbox in inbox_on(InboxLimits.xmtp()):
        yield inbox


@pytest.fixture
async def uncapped() -> AsyncIterator[Inbox]:
    async for inbox in inbox_on(None):
        yield inbox


class TestInstallationCap:
    async def test_without_limits_an_inbox_takes_any_number_of_installations(
            self, uncapped: Inbox) -> None:
        await uncapped.publish(*create_inbox(new_key()))
        for _ in range(15):
            await uncapped.publish(add(new_key()))
        assert await uncapped.log_length() == 16

    async def test_the_eleventh_active_installation_is_refused_in_libxmtps_words(
            self, capped: Inbox) -> None:
        first = new_key()
        await capped.publish(*create_inbox(first))
        for _ in range(9):
            await capped.publish(add(new_key()))

        refused = await capped.refused(add(new_key()))
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert refused.details() == (
            f"Cannot register a new installation because the InboxID {INBOX} has already "
            "registered 10/10 installations. Please revoke existing installations first.")
        assert await capped.log_length() == 10  # nothing of the refused update was kept

        await capped.publish(revoke(first))
        await capped.publish(add(new_key()))  # a revoked one's place is free again
        assert await capped.log_length() == 12

    async def test_an_update_that_revokes_as_many_as_it_adds_is_let_through_at_the_cap(
            self, capped: Inbox) -> None:
        keys = [new_key() for _ in range(10)]
        await capped.publish(*create_inbox(keys[0]))
        for key in keys[1:]:
            await capped.publish(add(key))
        await capped.publish(revoke(keys[3]), add(new_key()))
        await capped.publish(add(keys[5]))  # already active: no new installation
        assert (await capped.refused(add(new_key()))).code() == (
            grpc.StatusCode.FAILED_PRECONDITION)


class TestLifetimeCap:
    async def test_the_257th_update_is_refused_as_xmtps_node_refuses_it(
            self, capped: Inbox) -> None:
        key = new_key()
        await capped.publish(*create_inbox(key))
        for _ in range(255 // 2):
            await capped.publish(revoke(key))
            key = new_key()
            await capped.publish(add(key))
        assert await capped.log_length() == 255
        await capped.publish(revoke(key))
        assert await capped.log_length() == 256

        refused = await capped.refused(add(new_key()))
        assert refused.code() == grpc.StatusCode.UNKNOWN  # a plain error in xmtp-node-go
        assert refused.details() == "inbox log is full"
        assert await capped.log_length() == 256


class TestUnservedMethods:
    async def test_the_decentralised_api_is_answered_unimplemented_and_the_call_kept(
            self) -> None:
        async with DevNode.start() as node, \
                grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel:
            get_nodes = channel.unary_unary("/xmtp.xmtpv4.payer_api.PayerApi/GetNodes")
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await get_nodes(b"", metadata=(("authorization", "Bearer t0ken"),))
        assert caught.value.code() == grpc.StatusCode.UNIMPLEMENTED
        assert "decentralised API" in (caught.value.details() or "")
        assert "without a gateway host" in (caught.value.details() or "")
        [call] = node.unserved_calls
        assert call.method == "/xmtp.xmtpv4.payer_api.PayerApi/GetNodes"
        assert ("authorization", "Bearer t0ken") in call.metadata


class TestCommandLine:
    def test_the_caps_are_off_unless_given_and_must_be_positive(
            self, capsys: pytest.CaptureFixture[str]) -> None:
        parser = build_parser()
        plain = parser.parse_args(["devnode"])
        assert (plain.max_installations, plain.max_inbox_updates) == (None, None)
        capped = parser.parse_args(
            ["devnode", "--max-installations", "10", "--max-inbox-updates", "256"])
        assert (capped.max_installations, capped.max_inbox_updates) == (10, 256)
        with pytest.raises(SystemExit):
            parser.parse_args(["devnode", "--max-installations", "0"])
        assert "not a whole number of 1 or more" in capsys.readouterr().err
