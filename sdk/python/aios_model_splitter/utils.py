"""Utility modules (seed 002, "Utility Modules"): FileDownloader, LayerHash, and S3Manager (from .s3)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import urllib.error
import urllib.parse
import urllib.request

from .errors import DownloadError
from .s3 import S3Manager, S3TransferError

__all__ = ["FileDownloader", "LayerHash", "S3Manager", "DownloadError", "S3TransferError", "DOWNLOAD_CHUNK_BYTES"]

log = logging.getLogger("aios_model_splitter")

#: FileDownloader reads and writes at most this much at a time (the seed's 4 MB chunks)
DOWNLOAD_CHUNK_BYTES = 4 * 1024 * 1024


def _local_path(url: str) -> str | None:
    if url.startswith("file://"):
        return urllib.request.url2pathname(urllib.parse.urlparse(url).path)
    if os.path.isabs(url):
        return url
    return None


class FileDownloader:
    """Downloads a URL to a file, creating the target's directories (seed: ``FileDownloader().download(url, path)``).

    http(s) URLs are streamed in 4 MB chunks; an absolute local path or a ``file://`` URL is copied. The file is
    written under ``<target_path>.part`` and renamed when complete, so a failed download leaves no partial file at
    ``target_path``. ``download`` returns True or False as in the seed; the reason for a False is in ``last_error``
    (and logged). With ``raise_on_error=True`` it raises DownloadError instead of returning False.
    """

    def __init__(self, *, timeout: float = 60.0, raise_on_error: bool = False) -> None:
        #: seconds without progress on the connection before a download is given up
        self.timeout = timeout
        self.raise_on_error = raise_on_error
        self.last_error: str | None = None

    def download(self, url: str, target_path: str) -> bool:
        self.last_error = None
        part = f"{target_path}.part"
        try:
            parent = os.path.dirname(os.path.abspath(target_path))
            os.makedirs(parent, exist_ok=True)
            local = _local_path(url)
            if local is not None:
                shutil.copyfile(local, part)
            else:
                self._fetch(url, part)
            os.replace(part, target_path)
        except Exception as err:
            try:
                os.remove(part)
            except OSError:
                pass
            message = f"download of {url} failed: {err}"
            self.last_error = message
            log.error("%s", message)
            if self.raise_on_error:
                raise DownloadError(message) from err
            return False
        log.info("downloaded %s to %s", url, target_path)
        return True

    def _fetch(self, url: str, part: str) -> None:
        scheme = urllib.parse.urlparse(url).scheme
        if scheme not in ("http", "https"):
            raise ValueError(f"not an http(s) URL, an absolute path or a file:// URL: {url!r}")
        req = urllib.request.Request(url, headers={"user-agent": "aios-model-splitter"})
        try:
            res = urllib.request.urlopen(req, timeout=self.timeout)
        except urllib.error.HTTPError as err:
            err.close()
            raise OSError(f"HTTP {err.code}") from None
        with res, open(part, "wb") as out:
            expected = res.headers.get("content-length")
            received = 0
            while True:
                chunk = res.read(DOWNLOAD_CHUNK_BYTES)
                if not chunk:
                    break
                out.write(chunk)
                received += len(chunk)
            if expected is not None and expected.isdigit() and received != int(expected):
                raise OSError(f"connection closed after {received} of {expected} bytes")


class LayerHash:
    """The MD5 of a model or layer file, read in chunks (seed: ``LayerHash().get_hash(path)``)."""

    #: bytes read at a time (bounded memory whatever the file's size)
    chunk_size = 1024 * 1024

    def get_hash(self, file_path: str) -> str | None:
        """The hex MD5 of the file's contents, or None (logged) when it is missing, not a file, or unreadable."""
        try:
            if not os.path.isfile(file_path):
                log.error("cannot hash %s: no such file", file_path)
                return None
            digest = hashlib.md5(usedforsecurity=False)
            with open(file_path, "rb") as f:
                while True:
                    chunk = f.read(self.chunk_size)
                    if not chunk:
                        break
                    digest.update(chunk)
            return digest.hexdigest()
        except OSError as err:
            log.error("cannot hash %s: %s", file_path, err)
            return None
