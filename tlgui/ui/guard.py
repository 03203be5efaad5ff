"""Handlers never crash the page: a user's mistake shows as one line, a bug as one line plus a log entry."""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable

from ..errors import TlguiError
from .text import t

log = logging.getLogger("tlgui.ui")
SERVER_PATH = re.compile(r"(?<![\w.:/])/(?:[\w.@+~-]+/)+([\w.@+~-]+)")


def hide_paths(text: str) -> str:
    """A message as a visitor may see it: a file path of the server shortened to the file's name."""
    return SERVER_PATH.sub(r"\1", text)


def error_line(error: BaseException) -> str:
    if isinstance(error, TlguiError):
        reason = str(error)
    else:
        reason = t("unexpected", kind=type(error).__name__, detail=str(error)[:200] or "no detail")
    return t("status_error", reason=hide_paths(reason.splitlines()[0]) if reason else reason)


def guarded(error_output, reset: dict | None = None) -> Callable:
    """Wrap a handler that returns `{component: value}`: on any exception it returns
    `{error_output: "**Error:** ...", **reset}` instead and leaves the rest of the page as it was."""

    def decorate(fn: Callable) -> Callable:
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            try:
                return fn(*args, **kwargs)
            except Exception as e:
                if not isinstance(e, TlguiError):
                    log.exception("handler %s failed", fn.__name__)
                return {**(reset or {}), error_output: error_line(e)}

        return wrapper

    return decorate
