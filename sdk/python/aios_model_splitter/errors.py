"""The SDK's exceptions: one base class, one subclass per kind of failure."""

from __future__ import annotations


class SplitterSDKError(Exception):
    """Base class of every error this SDK raises on purpose."""


class ContextError(SplitterSDKError):
    """The task's environment is incomplete or malformed (a variable missing, TASK_DATA not a JSON object).

    ``variable`` names the environment variable at fault.
    """

    code = "bad_context"

    def __init__(self, message: str, variable: str | None = None) -> None:
        super().__init__(message)
        self.variable = variable


class StatusUpdateError(SplitterSDKError):
    """A PUT to TASK_STATUS_UPDATE_URL was refused or could not be made.

    ``status`` is the HTTP status, or None when no answer came (connection refused, timeout).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class RegistryError(SplitterSDKError):
    """A registry call failed: an HTTP error, a ``{"success": false, ...}`` envelope, or an answer that is not JSON.

    ``status`` is the HTTP status (0 when no answer came); ``code`` is the registry's error code when it gave one
    (e.g. ``not_found``, ``duplicate``, ``invalid_request``).
    """

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


class DownloadError(SplitterSDKError):
    """FileDownloader could not fetch a URL (raised only with ``raise_on_error=True``; otherwise ``download`` returns False)."""


class S3TransferError(SplitterSDKError):
    """An S3 upload or download failed (raised only with ``raise_on_error=True``; otherwise the method returns False).

    ``operation`` is ``"upload"`` or ``"download"``.
    """

    def __init__(self, message: str, operation: str, bucket: str, key: str) -> None:
        super().__init__(message)
        self.operation = operation
        self.bucket = bucket
        self.key = key
