"""The demo's files: the made-up picture, what the wallet sends for a file, where
received files are saved, and reading a file named at the prompt."""

from __future__ import annotations

import secrets
import struct
import zlib
from pathlib import Path

from gateway import demo_files
from gateway.demo import _read
from gateway.media.attachments import Attachment, decode_attachment, decode_remote_attachment
from gateway.media.local_store import LocalBlobStore, MediaKeys
from gateway.xmtp.client import content_type_of


class TestSamplePicture:
    def test_it_is_a_png_of_its_size_different_each_time(self) -> None:
        picture = demo_files.sample_picture(16)
        assert picture.startswith(b"\x89PNG\r\n\x1a\n")
        width, height = struct.unpack(">II", picture[16:24])
        assert (width, height) == (16, 16)
        start = picture.index(b"IDAT") + 4
        (length,) = struct.unpack(">I", picture[start - 8:start - 4])
        assert len(zlib.decompress(picture[start:start + length])) == 16 * (1 + 16 * 3)
        assert demo_files.sample_picture(16) != picture

    def test_the_default_travels_as_a_remote_attachment(self) -> None:
        assert len(demo_files.sample_picture()) > 65_536


class TestSendingAndSaving:
    async def test_a_small_file_goes_inline_a_large_one_remote(self, tmp_path: Path) -> None:
        store = LocalBlobStore(tmp_path, MediaKeys.derive({"k": secrets.token_bytes(32)}, "k"),
                               base_url="http://127.0.0.1:8080")
        small = Attachment("a.png", "image/png", b"\x89PNG")
        inline = await demo_files.wallet_content(small, store, inline_max_bytes=100)
        assert decode_attachment(inline) == small
        big = Attachment("b.png", "image/png", bytes(500))
        remote = await demo_files.wallet_content(big, store, inline_max_bytes=100)
        assert content_type_of(remote) == "xmtp.org/remoteStaticAttachment:1.0"
        assert decode_remote_attachment(remote).url.startswith("http://127.0.0.1:8080/media/demo/")

    def test_a_received_file_keeps_its_name_unless_it_is_taken(self, tmp_path: Path) -> None:
        first = demo_files.save(tmp_path, "../../a.png", b"1")
        second = demo_files.save(tmp_path, "a.png", b"2")
        assert first == tmp_path / "a.png" and second.parent == tmp_path and second != first
        assert demo_files.save(tmp_path, None, b"3").name.startswith("file")

    def test_a_file_named_at_the_prompt_is_read_with_its_type(self, tmp_path: Path) -> None:
        (tmp_path / "cat.jpg").write_bytes(b"\xff\xd8")
        assert _read(str(tmp_path / "cat.jpg")) == ("cat.jpg", b"\xff\xd8", "image/jpeg")
        assert _read(str(tmp_path / "missing.jpg")) is None
