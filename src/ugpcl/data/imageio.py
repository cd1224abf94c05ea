"""Reading 2D image files with checks, not warnings.

OpenCV decodes a truncated JPEG or PNG without failing: libjpeg prints a warning with no file
name and the missing part comes back flat grey. `read_image` therefore checks the file's own
end marker first (JPEG: end-of-image FF D9; PNG: the IEND chunk) and raises a UserError naming
the file; any other decoding failure is a UserError too.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import UserError

MODES = {"color": cv2.IMREAD_COLOR, "grey": cv2.IMREAD_GRAYSCALE, "unchanged": cv2.IMREAD_UNCHANGED}
REPLACE = "replace the file with an intact copy"


def check_complete(data: bytes, path: Path) -> None:
    """UserError if a JPEG or PNG file is cut short (its end marker is missing)."""
    if data[:3] == b"\xff\xd8\xff" and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise UserError("truncated JPEG file (no end-of-image marker)", path=path, fix=REPLACE)
    if data[:8] == b"\x89PNG\r\n\x1a\n" and data[-12:-4] != b"\x00\x00\x00\x00IEND":
        raise UserError("truncated PNG file (no IEND chunk at its end)", path=path, fix=REPLACE)


def read_image(path: str | Path, mode: str = "unchanged") -> np.ndarray:
    """The image at `path` as OpenCV decodes it (colour images in BGR order); `mode`: color | grey | unchanged."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise UserError(f"cannot read this file ({exc.strerror})", path=path, fix="check the path and its permissions") from exc
    check_complete(data, path)
    image = cv2.imdecode(np.frombuffer(data, np.uint8), MODES[mode])
    if image is None or image.size == 0:
        raise UserError("not a readable image", path=path, fix=f"{REPLACE} (PNG, JPEG or TIFF)")
    return image
