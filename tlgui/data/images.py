"""Turning image bytes into RGB pictures, whatever mode or orientation they were saved in."""

from __future__ import annotations

import io
import re
import warnings

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from ..errors import TlguiError
from .limits import env_limit

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
# Only these decoders ever see uploaded bytes: whatever a file's name, its content picks the decoder,
# and some of Pillow's others (EPS) run external programs.
FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
SIGNATURES = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*", b"RIFF")
MAX_PIXELS = 64_000_000  # TLGUI_MAX_MEGAPIXELS; larger pictures are refused before they are decoded
# Pillow's own bomb limit stays on as a second guard (it refuses beyond twice its MAX_IMAGE_PIXELS).


class BadImage(ValueError):
    """The file could not be used as an image; the message is the reason shown in the report."""


def open_rgb(data: bytes, draft: int | None = None, budget=None) -> Image.Image:
    """Decode `data` to an RGB image, honouring EXIF orientation.

    `draft` lets JPEG decode at a reduced scale when only a small picture is needed, which is
    several times faster than a full decode. `budget` (a limits.ReadBudget) counts the pixels
    decoded, and refuses once a whole dataset's pictures pass its limit.
    """
    if not data:
        raise BadImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data), formats=FORMATS)  # reads the header only
            w, h = img.size
            limit = int(env_limit("TLGUI_MAX_MEGAPIXELS", MAX_PIXELS, 1_000_000))
            if w * h > limit:
                raise BadImage(f"too large ({w}x{h} pixels; the limit is {limit / 1e6:g} megapixels)")
            if draft and img.format == "JPEG":
                img.draft("RGB", (draft, draft))
            if budget is not None:
                budget.add_pixels(img.size[0] * img.size[1])
            img.load()
            return to_rgb(_upright(img))
    except Image.DecompressionBombError as e:  # Pillow's own guard, before ours: it says how many pixels
        found = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(found.group(1)) / 1e6:,.0f} megapixels" if found else "beyond the image library's limit"
        limit = env_limit("TLGUI_MAX_MEGAPIXELS", MAX_PIXELS, 1_000_000)
        raise BadImage(f"too large ({size}; the limit is {limit / 1e6:g} megapixels)") from None
    except (BadImage, TlguiError):
        raise
    except UnidentifiedImageError:
        if data.startswith(SIGNATURES):  # it starts like a picture, so it is one that got damaged
            raise BadImage("truncated or damaged image") from None
        raise BadImage("not an image (or a format this tool does not read)") from None
    except Exception:  # Pillow raises many types for broken files: OSError, SyntaxError, ValueError...
        raise BadImage("truncated or damaged image") from None


def _upright(img: Image.Image) -> Image.Image:
    """Turn the picture as its EXIF orientation says; a damaged EXIF block leaves it as stored."""
    try:
        return ImageOps.exif_transpose(img)
    except Exception:
        return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is laid over white, 16-bit is scaled down."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(img, dtype=np.float32)
        hi = float(arr.max()) or 1.0
        return Image.fromarray((arr / hi * 255.0).clip(0, 255).astype(np.uint8)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        img = img.convert("RGBA")
        bg = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(bg, img).convert("RGB")
    return img.convert("RGB")


def square_tensor_bytes(img: Image.Image, size: int) -> np.ndarray:
    """Resize to size x size (the whole picture, squashed) as an HWC uint8 array."""
    return np.array(img.resize((size, size), Image.BILINEAR, reducing_gap=3.0), dtype=np.uint8)
