"""Turning image bytes into RGB pictures, whatever mode or orientation they were saved in."""

from __future__ import annotations

import io
import warnings

import numpy as np
from PIL import Image, ImageOps

IMAGE_EXTS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm"}
MAX_PIXELS = 64_000_000  # larger pictures are refused before they are decoded (decompression bombs)

Image.MAX_IMAGE_PIXELS = None  # we check the size ourselves, with a clear message


class BadImage(ValueError):
    """The file could not be used as an image; the message is the reason shown in the report."""


def open_rgb(data: bytes, draft: int | None = None) -> Image.Image:
    """Decode `data` to an RGB image, honouring EXIF orientation.

    `draft` lets JPEG decode at a reduced scale when only a small picture is needed, which is
    several times faster than a full decode.
    """
    if not data:
        raise BadImage("empty file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > MAX_PIXELS:
                raise BadImage(f"too large ({w}x{h} pixels; the limit is {MAX_PIXELS // 1_000_000} megapixels)")
            if draft and img.format == "JPEG":
                img.draft("RGB", (draft, draft))
            img.load()
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except BadImage:
        raise
    except Image.DecompressionBombError:
        raise BadImage("too large to decode safely") from None
    except Exception as e:  # Pillow raises many types for broken files
        reason = "not an image" if "cannot identify" in str(e) else f"unreadable image ({type(e).__name__})"
        raise BadImage(reason) from None


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
