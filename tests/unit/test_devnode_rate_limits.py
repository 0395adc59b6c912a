"""The devnode's per-client rate limits (off unless asked for), as XMTP's node answers
them: which requests are writes and what they cost, the rolling window, the status and
words of a refusal, a client's own budget; driven with plain grpc stubs and, for the
window, a clock moved by hand."""

from __future__ import annotations

import itertools
from pathlib import Path

import grpc
import pytest

from gateway.cli import build_parser
from gateway.config import parse_config
from gateway.xmtp.devnode import DevNode
from gateway.xmtp.devnode.proto_gen import identity_api_pb2 as identity_api
from gateway.xmtp.devnode.proto_gen import identity_api_pb2_grpc as identity_grpc
from gateway.xmtp.devnode.proto_gen import identity_associations_pb2 as assoc
from gateway.xmtp.devnode.proto_gen import mls_api_pb2 as mls_api
from gateway.xmtp.devnode.rate_limits import READ, WRITE, RateLimiter, RateLimits, cost_of
from tests.unit.config_fixtures import minimal

_inboxes = itertools.count(1)


def new_inbox() -> identity_api.PublishIdentityUpdateRequest:
    n = next(_inboxes)
    return identity_api.PublishIdentityUpdateRequest(identity_update=assoc.IdentityUpdate(
        inbox_id=f"{n:064x}", client_timestamp_ns=n, actions=[assoc.IdentityAction(
            create_inbox=assoc.CreateInbox(
                initial_identifier=f"0x{n:040x}", nonce=1,
                initial_identifier_kind=assoc.IDENTIFIER_KIND_ETHEREUM))]))


def lookup() -> identity_api.GetInboxIdsRequest:
    return identity_api.GetInboxIdsRequest(requests=[identity_api.GetInboxIdsRequest.Request(
        identifier="0x" + "ab" * 20, identifier_kind=assoc.IDENTIFIER_KIND_ETHEREUM)])


class Clock:
    def __init__(self) -> None:
        self.t = 50.0

    def __call__(self) -> float:
        return self.t


class TestWhatCounts:
    def test_writes_are_xmtp_nodes_publishing_calls_and_cost_one_per_message(self) -> None:
        three = mls_api.SendGroupMessagesRequest(messages=[
            mls_api.GroupMessageInput() for _ in range(3)])
        assert cost_of("SendGroupMessages", three) == (WRITE, 3)
        assert cost_of("SendWelcomeMessages", mls_api.SendWelcomeMessagesRequest(
            messages=[mls_api.WelcomeMessageInput()])) == (WRITE, 1)
        assert cost_of("PublishIdentityUpdate", new_inbox()) == (WRITE, 1)
        assert cost_of("UploadKeyPackage", object()) == (WRITE, 1)
        for read in ("QueryGroupMessages", "GetInboxIds", "SubscribeGroupMessages",
                     "FetchKeyPackages", "BatchPublishCommitLog"):
            assert cost_of(read, object()) == (READ, 1)


class TestTheRollingWindow:
    def test_a_client_is_refused_past_its_limit_until_its_oldest_leave_the_window(
            self) -> None:
        clock = Clock()
        limiter = RateLimiter(RateLimits(max_writes=3, max_reads=None, window_seconds=30),
                              now=clock)
        request = mls_api.SendGroupMessagesRequest(messages=[mls_api.GroupMessageInput()])
        assert limiter.check("a", "SendGroupMessages", request) is None
        clock.t += 10
        assert limiter.check("a", "SendGroupMessages", request) is None
        assert limiter.check("a", "SendGroupMessages", request) is None
        assert limiter.check("a", "SendGroupMessages", request) == (
            "1 exceeds rate limit RaPUB")
        assert limiter.check("b", "SendGroupMessages", request) is None  # its own budget
        assert limiter.check("a", "GetInboxIds", object()) is None  # reads: no limit
        clock.t += 20  # the first leaves the window
        assert limiter.check("a", "SendGroupMessages", request) is None
        assert limiter.check("a", "SendGroupMessages", request) is not None
        assert limiter.used("a", WRITE) == 3
        assert limiter.refused == {WRITE: 2}
        assert limiter.counted == {WRITE: 5, READ: 1}

    def test_a_request_that_would_cross_the_limit_is_refused_whole(self) -> None:
        limiter = RateLimiter(RateLimits(max_writes=4, window_seconds=30), now=Clock())
        two = mls_api.SendWelcomeMessagesRequest(messages=[
            mls_api.WelcomeMessageInput(), mls_api.WelcomeMessageInput()])
        assert limiter.check("a", "SendWelcomeMessages", two) is None
        assert limiter.check("a", "PublishIdentityUpdate", object()) is None
        assert limiter.check("a", "SendWelcomeMessages", two) == "2 exceeds rate limit RaPUB"
        assert limiter.used("a", WRITE) == 3  # a refused request uses nothing


class TestTheNode:
    async def test_it_answers_resource_exhausted_per_client_as_xmtps_node_does(self) -> None:
        limits = RateLimits(max_writes=2, max_reads=3, window_seconds=300)
        async with DevNode.start(rate_limits=limits) as node, \
                grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as first, \
                grpc.aio.insecure_channel(f"127.0.0.1:{node.port}", options=[
                    ("grpc.use_local_subchannel_pool", 1)]) as second:  # its own connection
            stub = identity_grpc.IdentityApiStub(first)
            await stub.PublishIdentityUpdate(new_inbox())
            await stub.PublishIdentityUpdate(new_inbox())
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.PublishIdentityUpdate(new_inbox())
            for _ in range(3):
                await stub.GetInboxIds(lookup())
            with pytest.raises(grpc.aio.AioRpcError) as read_refused:
                await stub.GetInboxIds(lookup())
            # another connection is another client, with a budget of its own
            await identity_grpc.IdentityApiStub(second).PublishIdentityUpdate(new_inbox())
            forwarded = (("x-forwarded-for", "203.0.113.9, 10.0.0.1"),)
            await stub.PublishIdentityUpdate(new_inbox(), metadata=forwarded)
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert caught.value.details().startswith("1 exceeds rate limit Ripv4:127.0.0.1:")
        assert caught.value.details().endswith("PUB")
        assert read_refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert read_refused.value.details().endswith("DEF")
        assert node.rate_limiter is not None
        assert node.rate_limiter.refused == {WRITE: 1, READ: 1}
        assert node.rate_limiter.used("203.0.113.9", WRITE) == 1

    async def test_without_limits_nothing_is_counted_or_refused(self) -> None:
        async with DevNode.start() as node, \
                grpc.aio.insecure_channel(f"127.0.0.1:{node.port}") as channel:
            stub = identity_grpc.IdentityApiStub(channel)
            for _ in range(20):
                await stub.PublishIdentityUpdate(new_inbox())
        assert node.rate_limiter is None


class TestCommandLine:
    def test_the_limits_are_off_unless_given(self, capsys: pytest.CaptureFixture[str]) -> None:
        parser = build_parser()
        plain = parser.parse_args(["devnode"])
        assert (plain.max_writes, plain.max_reads, plain.rate_window) == (None, None, 300.0)
        scaled = parser.parse_args(["devnode", "--max-writes", "300", "--max-reads", "2000",
                                    "--rate-window", "30"])
        assert (scaled.max_writes, scaled.max_reads, scaled.rate_window) == (300, 2000, 30.0)
        with pytest.raises(SystemExit):
            parser.parse_args(["devnode", "--rate-window", "0"])
        assert "not a number of seconds above 0" in capsys.readouterr().err


class TestWhoIsAClient:
    def test_per_connection_by_default_each_local_client_has_its_own_budget(self) -> None:
        limiter = RateLimiter(RateLimits(max_writes=1))
        one = limiter.client_of("ipv4:127.0.0.1:40001", None)
        other = limiter.client_of("ipv4:127.0.0.1:40002", None)
        assert one != other
        assert limiter.check(one, "SendGroupMessages", None) is None
        assert limiter.check(other, "SendGroupMessages", None) is None

    @pytest.mark.parametrize("peers", [("ipv4:127.0.0.1:40001", "ipv4:127.0.0.1:40002"),
                                       ("ipv6:[::1]:40001", "ipv6:[::1]:40002")])
    def test_per_address_every_client_of_a_host_shares_one_as_on_the_network(
            self, peers: tuple[str, str]) -> None:
        limiter = RateLimiter(RateLimits(max_writes=1, per_address=True))
        one, other = (limiter.client_of(peer, None) for peer in peers)
        assert one == other == peers[0].rsplit(":", 1)[0]
        assert limiter.check(one, "SendGroupMessages", None) is None
        assert limiter.check(other, "SendGroupMessages", None) is not None

    def test_a_forwarded_address_is_the_client_whatever_the_connection(self) -> None:
        limiter = RateLimiter(RateLimits(max_writes=1))
        assert limiter.client_of("ipv4:10.0.0.5:40001", "203.0.113.7, 10.0.0.1") == \
            "203.0.113.7"

    def test_the_cli_and_the_embedded_config_take_it(self, tmp_path: Path) -> None:
        args = build_parser().parse_args(["devnode", "--max-writes", "5",
                                          "--rate-per-address"])
        assert args.rate_per_address is True
        assert build_parser().parse_args(["devnode"]).rate_per_address is False
        raw = minimal()
        raw["xmtp"] = {**raw["xmtp"], "devnode": {"rate_per_address": True}}
        config = parse_config(raw, base_dir=tmp_path, env={})
        assert config.xmtp.devnode.rate_per_address is True
