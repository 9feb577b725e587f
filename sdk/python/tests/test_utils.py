"""FileDownloader (HTTP from a local server, local paths, failures) and LayerHash (MD5 against hashlib)."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from aios_model_splitter import DownloadError, FileDownloader, LayerHash
from aios_model_splitter.utils import DOWNLOAD_CHUNK_BYTES
from conftest import Answer, LocalServer

# more than two 4 MB chunks, and not a multiple of any chunk size
BLOB = os.urandom(2 * DOWNLOAD_CHUNK_BYTES + 12345)


def test_downloads_over_http_in_chunks_creating_directories(server: LocalServer, tmp_path: Path) -> None:
    server.route("GET", "/models/gpt2.bin", lambda _r: Answer(200, BLOB, {"content-type": "application/octet-stream"}))
    target = tmp_path / "a" / "b" / "gpt2.bin"
    d = FileDownloader()
    assert d.download(f"{server.url}/models/gpt2.bin", str(target)) is True
    assert d.last_error is None
    assert target.read_bytes() == BLOB
    assert not Path(f"{target}.part").exists()


def test_a_404_is_false_with_the_reason(server: LocalServer, tmp_path: Path) -> None:
    target = tmp_path / "missing.bin"
    d = FileDownloader()
    assert d.download(f"{server.url}/models/missing.bin", str(target)) is False
    assert d.last_error == f"download of {server.url}/models/missing.bin failed: HTTP 404"
    assert not target.exists() and not Path(f"{target}.part").exists()


def test_a_cut_connection_leaves_no_file(server: LocalServer, tmp_path: Path) -> None:
    server.route("GET", "/cut", lambda _r: Answer(200, BLOB, {}, truncate_to=1000))
    target = tmp_path / "cut.bin"
    d = FileDownloader()
    assert d.download(f"{server.url}/cut", str(target)) is False
    assert d.last_error is not None and d.last_error.startswith(f"download of {server.url}/cut failed: ")
    assert not target.exists() and not Path(f"{target}.part").exists()


def test_a_failed_download_keeps_an_existing_target(server: LocalServer, tmp_path: Path) -> None:
    target = tmp_path / "kept.bin"
    target.write_bytes(b"previous")
    assert FileDownloader().download(f"{server.url}/nothing", str(target)) is False
    assert target.read_bytes() == b"previous"


def test_copies_a_local_path_and_a_file_url(tmp_path: Path) -> None:
    src = tmp_path / "src model.bin"
    src.write_bytes(BLOB[:100_000])
    d = FileDownloader()
    assert d.download(str(src), str(tmp_path / "out1" / "m.bin")) is True
    assert (tmp_path / "out1" / "m.bin").read_bytes() == BLOB[:100_000]
    assert d.download(src.as_uri(), str(tmp_path / "out2" / "m.bin")) is True
    assert (tmp_path / "out2" / "m.bin").read_bytes() == BLOB[:100_000]
    assert d.download(str(tmp_path / "nope.bin"), str(tmp_path / "out3" / "m.bin")) is False
    assert d.last_error is not None and "nope.bin" in d.last_error


def test_unsupported_urls_and_unreachable_hosts_fail(tmp_path: Path) -> None:
    d = FileDownloader(timeout=5)
    assert d.download("ftp://example.com/x", str(tmp_path / "x")) is False
    assert d.last_error is not None and "not an http(s) URL" in d.last_error
    assert d.download("relative/path.bin", str(tmp_path / "y")) is False
    assert d.download("http://127.0.0.1:9/x", str(tmp_path / "z")) is False
    assert d.last_error is not None and d.last_error.startswith("download of http://127.0.0.1:9/x failed: ")


def test_raise_on_error_raises_download_error(server: LocalServer, tmp_path: Path) -> None:
    with pytest.raises(DownloadError) as info:
        FileDownloader(raise_on_error=True).download(f"{server.url}/missing", str(tmp_path / "m"))
    assert str(info.value) == f"download of {server.url}/missing failed: HTTP 404"


def test_layer_hash_matches_hashlib_on_a_multi_chunk_file(tmp_path: Path) -> None:
    path = tmp_path / "split_1.pt"
    path.write_bytes(BLOB)
    assert len(BLOB) > 3 * LayerHash.chunk_size
    assert LayerHash().get_hash(str(path)) == hashlib.md5(BLOB).hexdigest()
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    assert LayerHash().get_hash(str(empty)) == "d41d8cd98f00b204e9800998ecf8427e"


def test_layer_hash_of_a_missing_file_or_a_directory_is_none(tmp_path: Path) -> None:
    assert LayerHash().get_hash(str(tmp_path / "missing.pt")) is None
    assert LayerHash().get_hash(str(tmp_path)) is None
