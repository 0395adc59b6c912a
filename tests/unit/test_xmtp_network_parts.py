"""The XMTP adapter's small parts: which node each env reaches, content type names, the
send log, and the loop thread."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest

from gateway.config import parse_config
from gateway.errors import first_line
from gateway.xmtp.loop_thread import LoopThread
from gateway.xmtp.network import NETWORK_HOSTS, content_name, node_url_for
from gateway.xmtp.send_log import SendLog
from tests.unit.config_fixtures import minimal


def xmtp_config(tmp_path: Path, **xmtp: object):  # type: ignore[no-untyped-def]
    raw = minimal()
    raw["xmtp"].update(xmtp)
    return parse_config(raw, base_dir=tmp_path, persist_secrets=False).xmtp


class TestNodeUrl:
    def test_local_uses_the_configured_node(self, tmp_path: Path) -> None:
        assert node_url_for(xmtp_config(tmp_path)) == "http://127.0.0.1:5556"

    @pytest.mark.parametrize("env", ["dev", "production"])
    def test_the_public_networks_use_libxmtps_tls_hosts(self, tmp_path: Path, env: str) -> None:
        url = node_url_for(xmtp_config(tmp_path, env=env, node_url=None))
        assert url == NETWORK_HOSTS[env]
        assert url is not None and url.startswith("https://") and f".{env}." in url

    def test_a_configured_node_url_overrides_the_public_host(self, tmp_path: Path) -> None:
        config = xmtp_config(tmp_path, env="production", node_url="https://node.example.org")
        assert node_url_for(config) == "https://node.example.org"

    def test_an_embedded_devnode_is_known_only_once_it_listens(self, tmp_path: Path) -> None:
        config = xmtp_config(tmp_path, node_url=None, devnode={"embedded": True})
        assert node_url_for(config) is None


class TestContentName:
    @pytest.mark.parametrize(("full", "name"), [
        ("xmtp.org/text:1.0", "text"),
        ("xmtp.org/reaction:1.0", "reaction"),
        ("xmtp.org/remoteStaticAttachment:1.0", "remoteStaticAttachment"),
        ("xmtp.org/leave_request:1.0", "leave_request"),
        ("unknown", "unknown"),
    ])
    def test_the_type_id_is_the_name(self, full: str, name: str) -> None:
        assert content_name(full) == name


class TestSendLog:
    def test_a_prepared_send_is_found_again_after_reopening(self, tmp_path: Path) -> None:
        path = tmp_path / "xmtp" / "gateway.db3.sends"
        log = SendLog(path)
        assert log.find("MSG1") is None
        log.record("MSG1", "group-a", "m-1")
        log.close()
        reopened = SendLog(path)
        assert reopened.find("MSG1") == ("group-a", "m-1")
        assert reopened.find("MSG2") is None
        reopened.close()


class TestLoopThread:
    async def test_work_runs_on_its_own_thread_and_its_result_comes_back(self) -> None:
        thread = LoopThread("test-loop")
        try:
            async def where() -> str:
                await asyncio.sleep(0)
                return threading.current_thread().name

            assert await thread.run(where()) == "test-loop"
        finally:
            thread.stop()

    async def test_cancelling_the_caller_cancels_the_work(self) -> None:
        thread = LoopThread("test-loop")
        cancelled = threading.Event()
        try:
            async def forever() -> None:
                try:
                    await asyncio.sleep(60)
                except asyncio.CancelledError:
                    cancelled.set()
                    raise

            task = asyncio.create_task(thread.run(forever()))
            await asyncio.sleep(0.05)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await asyncio.to_thread(cancelled.wait, 5)
        finally:
            thread.stop()

    async def test_an_error_is_raised_to_the_caller(self) -> None:
        thread = LoopThread("test-loop")
        try:
            async def fail() -> None:
                raise ValueError("boom")

            with pytest.raises(ValueError, match="boom"):
                await thread.run(fail())
        finally:
            thread.stop()


class TestLibraryErrorText:
    def test_only_the_first_line_of_libxmtps_message_is_kept(self) -> None:
        table = "publish failed: tcp connect error\n============ Api Stats ============\n" \
                "UploadKeyPackage 0\nFetchKeyPackage 0"
        assert first_line(RuntimeError(table)) == "publish failed: tcp connect error …"
        assert first_line(RuntimeError("one line")) == "one line"
        assert first_line(RuntimeError("")) == "RuntimeError"


class TestLoopThreadSettling:
    async def test_waits_for_cancelled_work_to_finish_its_clean_up(self) -> None:
        """What XmtpChatNetwork.close needs: a stream's pump, cancelled, still closes its
        stream (an await) before libxmtp's database is released."""
        thread = LoopThread("test-loop")
        started, cleaned_up = threading.Event(), threading.Event()
        try:
            async def streaming() -> None:
                started.set()
                try:
                    await asyncio.sleep(60)
                finally:
                    await asyncio.sleep(0.05)  # closing the stream takes a moment
                    cleaned_up.set()

            pump = thread.submit(streaming())
            assert await asyncio.to_thread(started.wait, 5)
            pump.cancel()  # returns at once: the task is only asked to stop

            async def release() -> bool:
                await thread.settle()
                return cleaned_up.is_set()

            assert await thread.run(release())
        finally:
            thread.stop()
