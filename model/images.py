"""RGB images through OpenCV's image codecs, which take and give BGR."""
from __future__ import annotations

import cv2
import numpy as np


def encode_jpeg(rgb: np.ndarray, quality: int) -> bytes:
    """JPEG bytes of an RGB image: handed RGB as it is, the codec would take red for blue in its luma and chroma."""
    _, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    return buf.tobytes()


def decode_jpeg(data: bytes) -> np.ndarray:
    """The RGB image of JPEG bytes."""
    return cv2.cvtColor(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
