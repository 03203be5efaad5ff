"""Who is asking: each browser has its own secret owner token, kept in its local storage.

The page sends the token with every event (the `owner` input of each handler), so a server
restart with the tab open loses nothing. This table maps Gradio's per-page session hash to the
token as well, for events that carry none. Programs that call the API without a browser are
owners by their client session (or pass a key of their own as the `owner_key` parameter).
"""

from __future__ import annotations

import re
import secrets
import threading
from pathlib import Path

import gradio as gr

SECRET_FILE = ".browser-secret"
OWNER_KEY = re.compile(r"[A-Za-z0-9_-]{16,128}")


def browser_secret(root: Path) -> str:
    """The key that encrypts the token in the browser; kept beside the runs so a restart keeps it."""
    root.mkdir(parents=True, exist_ok=True)
    path = root / SECRET_FILE
    try:
        return path.read_text().strip()
    except OSError:
        value = secrets.token_urlsafe(24)
        path.write_text(value)
        path.chmod(0o600)
        return value


def new_owner_token() -> str:
    return secrets.token_urlsafe(24)


def is_owner_key(token) -> bool:
    """A browser's key as `new_owner_token` makes them; never the `session:` names of programs."""
    return isinstance(token, str) and OWNER_KEY.fullmatch(token) is not None


class Sessions:
    def __init__(self) -> None:
        self._owners: dict[str, str] = {}
        self._lock = threading.Lock()

    def register(self, request: gr.Request | None, token: str | None) -> str:
        """Bind this page to the browser's token (made here on its first visit); returns the token."""
        if not is_owner_key(token):
            token = new_owner_token()
        if request is not None and request.session_hash:
            with self._lock:
                self._owners[request.session_hash] = token
        return token

    def owner(self, request: gr.Request | None) -> str:
        session = getattr(request, "session_hash", None) or "anonymous"
        with self._lock:
            return self._owners.get(session) or f"session:{session}"

    def forget(self, request: gr.Request | None) -> None:
        session = getattr(request, "session_hash", None)
        with self._lock:
            self._owners.pop(session, None)
