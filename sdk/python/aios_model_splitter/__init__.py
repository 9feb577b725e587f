"""aios_model_splitter: build a model-splitting program that a Blockmesh split task runs (seed 002).

A splitter is a class with ``begin()``, ``main(extra_data)`` and ``finish(extra_data)``, each returning
``(True, data)`` or ``(False, error)``; ``execute_model_splitter(MySplitter)`` builds the Context from the task's
environment, runs the three steps and reports them to the task registry.

Modules: ``aios_model_splitter.executor`` (execute_model_splitter, run_model_splitter), ``.context`` (Context),
``.utils`` (S3Manager, FileDownloader, LayerHash), ``.clients`` (ModelLayerClient, Blocks), ``.errors``.
"""

from .clients import Blocks, ModelLayerClient
from .context import Context
from .errors import (
    ContextError,
    DownloadError,
    RegistryError,
    S3TransferError,
    SplitterSDKError,
    StatusUpdateError,
)
from .executor import ModelSplitter, StepResult, execute_model_splitter, run_model_splitter
from .s3 import S3Manager
from .utils import FileDownloader, LayerHash

__version__ = "0.1.0"

__all__ = [
    "Blocks",
    "Context",
    "ContextError",
    "DownloadError",
    "FileDownloader",
    "LayerHash",
    "ModelLayerClient",
    "ModelSplitter",
    "RegistryError",
    "S3Manager",
    "S3TransferError",
    "SplitterSDKError",
    "StatusUpdateError",
    "StepResult",
    "execute_model_splitter",
    "run_model_splitter",
]
