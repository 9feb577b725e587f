"""Runs a splitter's lifecycle (seed 002, "Model splitter SDK"): begin → main → finish, reported to the task registry.

The seed's entrypoint::

    from aios_model_splitter.executor import execute_model_splitter
    from my_splitter_code.splitter_container import MyCustomModelSplitter

    if __name__ == "__main__":
        execute_model_splitter(MyCustomModelSplitter)

The task's outcome is what gets reported (complete or failed). ``execute_model_splitter`` also returns the exit
code the process should end with (0 complete, 1 failed); ``run_model_splitter`` ends the process with it.
"""

from __future__ import annotations

import logging
import sys
import traceback
from collections.abc import Callable
from typing import Any, Protocol

from .context import Context

__all__ = ["execute_model_splitter", "run_model_splitter", "ModelSplitter", "StepResult", "MAX_ERROR_CHARS"]

log = logging.getLogger("aios_model_splitter")

#: each lifecycle method returns ``(True, data)`` or ``(False, error)``
StepResult = tuple[bool, Any]

#: the longest error the task registry takes (Blockmesh: 16 KiB); longer ones keep their head and tail
MAX_ERROR_CHARS = 16_384


class ModelSplitter(Protocol):
    """What ``execute_model_splitter`` expects of an instance of the class it is given (the seed's "Sample Container
    Class", constructed as ``SplitterClass(context)``)."""

    def begin(self) -> StepResult: ...

    def main(self, extra_data: Any) -> StepResult: ...

    def finish(self, extra_data: Any) -> StepResult: ...


class _StepFailed(Exception):
    def __init__(self, stage: str, error: Any) -> None:
        super().__init__(f"{stage}: {error}")
        self.stage = stage
        self.error = error


def _step(stage: str, result: Any) -> Any:
    if not isinstance(result, tuple) or len(result) != 2:
        raise TypeError(f"{stage}() must return (True, data) or (False, error), not {result!r:.200}")
    ok, data = result
    if not ok:
        raise _StepFailed(stage, data)
    return data


def _clip(error: str) -> str:
    if len(error) <= MAX_ERROR_CHARS:
        return error
    head = MAX_ERROR_CHARS // 4
    tail = MAX_ERROR_CHARS - head - 40
    return f"{error[:head]}\n... ({len(error) - head - tail} characters left out) ...\n{error[-tail:]}"


def execute_model_splitter(splitter_class: Callable[[Context], ModelSplitter], context: Context | None = None) -> int:
    """Builds the Context from the environment (unless one is given), runs ``splitter_class(context)``'s
    ``begin()``, ``main(extra_data)`` and ``finish(extra_data)``, and reports each step on TASK_STATUS_UPDATE_URL:

    * ``{"status": "running", "progress": 0, "message": "begin"}``, then ``{"status": "running", "message": "main"}``,
      then ``{"status": "running", "message": "finish"}``;
    * ``{"status": "complete", "progress": 1, "message": "done", "result": <finish's data>}`` when all three succeed;
    * ``{"status": "failed", "error": "<step>: <error>"}`` at the first ``(False, error)``; an exception raised by the
      class (or a failed status report) is reported as ``"error: <traceback>"``.

    Returns 0 when the task completed, 1 when it failed. Raises ContextError (before reporting anything) when the
    environment is incomplete, since there is then nowhere to report to.
    """
    ctx = Context.from_env() if context is None else context

    def fail(stage: str, error: Any) -> int:
        message = _clip(f"{stage}: {error}")
        log.error("task %s failed: %s", ctx.task_id, message)
        try:
            ctx.report("failed", error=message)
        except Exception as err:  # the failure is already logged; nothing more can be done
            log.error("task %s: could not report the failure: %s", ctx.task_id, err)
        return 1

    try:
        ctx.report("running", progress=0, message="begin")
        splitter = splitter_class(ctx)
        begun = _step("begin", splitter.begin())
        ctx.report("running", message="main")
        mained = _step("main", splitter.main(begun))
        ctx.report("running", message="finish")
        result = _step("finish", splitter.finish(mained))
        ctx.report("complete", progress=1, message="done", result=result)
        log.info("task %s complete", ctx.task_id)
        return 0
    except _StepFailed as failed:
        return fail(failed.stage, failed.error)
    except Exception:
        return fail("error", traceback.format_exc().rstrip())


def run_model_splitter(splitter_class: Callable[[Context], ModelSplitter], context: Context | None = None) -> None:
    """``execute_model_splitter``, then ends the process with its exit code (0 complete, 1 failed)."""
    sys.exit(execute_model_splitter(splitter_class, context))
