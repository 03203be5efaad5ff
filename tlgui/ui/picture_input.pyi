"""A picture input whose upload reaches the handler as a file, never decoded by Gradio first.

`gr.Image` opens every upload with Pillow before the handler runs (to convert its mode): a small
file that declares 30000 x 30000 pixels would cost gigabytes before any check. This component
hands over the uploaded file's path (or the bytes of a pasted picture) untouched; `read_picture`
then decodes it through the engine's guarded reader, which refuses a picture above the pixel
limit from its header alone.
"""

from __future__ import annotations

import base64
from pathlib import Path

import gradio as gr
from PIL import Image

from ..errors import TlguiError
from ..images import BadImage, open_rgb
from ..limits import member_bytes
from .text import t

class GuardedImage(gr.Image):
    """gr.Image on the page and in the API; its handler gets a path or bytes, never a decoded picture."""

    is_template = True  # the page draws Gradio's own Image (no front-end code of its own to fetch)

    def preprocess(self, payload) -> str | bytes | None:
        if payload is None:
            return None
        url = getattr(payload, "url", None) or ""
        if url.startswith("data:"):  # a pasted picture travels as a data URL
            head, _, body = url.partition(",")
            if len(body) > member_bytes() * 4 // 3 + 4:
                raise gr.Error(t("picture_too_big"))
            try:
                return base64.b64decode(body) if ";base64" in head else body.encode()
            except ValueError:
                raise gr.Error(t("picture_unreadable")) from None
        return payload.path
    from typing import Callable, Literal, Sequence, Any, TYPE_CHECKING
    from gradio.blocks import Block
    if TYPE_CHECKING:
        from gradio.components import Timer
        from gradio.components.base import Component


def read_picture(value, draft: int | None = None) -> Image.Image:
    """The handler's side: a path or bytes from GuardedImage to an RGB picture, through the guarded reader."""
    if isinstance(value, (str, Path)):
        cap = member_bytes()
        try:
            with open(value, "rb") as f:
                data = f.read(cap + 1)
        except OSError:
            raise TlguiError(t("picture_unreadable")) from None
        if len(data) > cap:
            raise TlguiError(t("picture_too_big"))
    elif isinstance(value, bytes):
        data = value
    else:
        raise TlguiError(t("picture_unreadable"))
    try:
        return open_rgb(data, draft=draft)
    except BadImage as e:
        raise TlguiError(t("picture_refused", reason=e)) from None