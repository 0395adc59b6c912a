"""The devnode's SQLite store: paging, duplicates, identity map, and restarts."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from gateway.errors import DevNodeDbInUse
from gateway.xmtp.devnode.storage import (
    DevNodeStorage,
    NewGroupMessage,
    NewWelcome,
    Page,
    WelcomeKind,
)

GROUP = b"group-1"


def message(n: int, group: bytes = GROUP) -> NewGroupMessage:
    return NewGroupMessage(group_id=group, data=f"payload {n}".encode(), sender_hmac=b"h",
                           should_push=True, is_commit=n % 2 == 0)


class TestGroupMessages:
    def test_pages_ascend_after_the_cursor_and_descend_before_it(self) -> None:
        store = DevNodeStorage(":memory:")
        ids = [m.id for m in store.add_group_messages([message(i) for i in range(5)])]
        store.add_group_messages([message(9, group=b"other")])
        assert [m.id for m in store.group_messages(GROUP, Page(False, ids[1], 2))] == ids[2:4]
        assert [m.id for m in store.group_messages(GROUP, Page(True, ids[3], 10))] == [
            ids[2], ids[1], ids[0]]
        assert [m.id for m in store.group_messages(GROUP, Page(True, 0, 2))] == [ids[4], ids[3]]
        assert store.newest_group_message(GROUP) == store.group_messages(
            GROUP, Page(False, ids[3], 1))[0]
        assert store.newest_group_message(b"nothing here") is None

    def test_an_identical_payload_is_stored_once(self) -> None:
        store = DevNodeStorage(":memory:")
        first = store.add_group_messages([message(1)])
        again = store.add_group_messages([message(1), message(2)])
        assert len(first) == 1 and [m.data for m in again] == [b"payload 2"]
        assert len(store.group_messages(GROUP, Page(False, 0, 100))) == 2

    def test_created_times_strictly_increase_like_ids(self) -> None:
        store = DevNodeStorage(":memory:")
        stored = store.add_group_messages([message(i) for i in range(50)])
        times = [m.created_ns for m in stored]
        assert times == sorted(set(times))


class TestRestart:
    def test_a_reopened_file_keeps_everything_and_ids_keep_growing(self, tmp_path: Path) -> None:
        path = str(tmp_path / "sub" / "devnode.db")
        store = DevNodeStorage(path)
        before = store.add_group_messages([message(1), message(2)])
        store.add_welcomes([NewWelcome(WelcomeKind.POINTER, b"inst", b"pointer", b"hpke", 2, b"")])
        store.put_key_package(b"inst", b"kp")
        seq = store.add_identity_update("aa", b"update", associate=[(1, "0xabc")], dissociate=[])
        store.close()

        store = DevNodeStorage(path)
        assert store.group_messages(GROUP, Page(False, 0, 10)) == before
        [welcome] = store.welcomes(b"inst", Page(False, 0, 10))
        assert (welcome.kind, welcome.data, welcome.wrapper_algorithm) == (
            WelcomeKind.POINTER, b"pointer", 2)
        assert store.key_package(b"inst") == b"kp"
        assert store.inbox_id_of(1, "0xabc") == "aa"
        assert [u.sequence_id for u in store.identity_updates("aa", 0)] == [seq]
        after = store.add_group_messages([message(3)])
        assert after[0].id > before[-1].id
        assert after[0].created_ns > before[-1].created_ns


class TestIdentityMap:
    def test_a_revoke_only_removes_the_revoking_inboxs_association(self) -> None:
        store = DevNodeStorage(":memory:")
        store.add_identity_update("aa", b"1", associate=[(1, "0xabc")], dissociate=[])
        store.add_identity_update("bb", b"2", associate=[], dissociate=[(1, "0xabc")])
        assert store.inbox_id_of(1, "0xabc") == "aa"
        store.add_identity_update("aa", b"3", associate=[], dissociate=[(1, "0xabc")])
        assert store.inbox_id_of(1, "0xabc") is None
        assert [u.payload for u in store.identity_updates("aa", 0)] == [b"1", b"3"]
        first = store.identity_updates("aa", 0)[0].sequence_id
        assert [u.payload for u in store.identity_updates("aa", first)] == [b"3"]
        assert store.inbox_exists("bb") and not store.inbox_exists("cc")

    def test_an_identical_update_sent_again_is_logged_once(self) -> None:
        store = DevNodeStorage(":memory:")
        assert store.add_identity_update("aa", b"1", associate=[], dissociate=[]) is not None
        assert store.add_identity_update("aa", b"1", associate=[], dissociate=[]) is None
        assert [u.payload for u in store.identity_updates("aa", 0)] == [b"1"]


class TestOneNodePerDatabase:
    def test_a_database_another_node_has_open_is_refused_naming_its_pid(
            self, tmp_path: Path) -> None:
        db = str(tmp_path / "devnode.db")
        first = DevNodeStorage(db)
        held_by_us = rf"another devnode is using .* \(pid {os.getpid()}\)"
        with pytest.raises(DevNodeDbInUse, match=held_by_us):
            DevNodeStorage(db)
        first.close()
        DevNodeStorage(db).close()  # free once the first is closed

    def test_memory_databases_are_never_shared_so_never_claimed(self) -> None:
        first, second = DevNodeStorage(":memory:"), DevNodeStorage(":memory:")
        first.close()
        second.close()
