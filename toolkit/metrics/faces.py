"""Face validity: the share of images in which MediaPipe's bundled face detector (BlazeFace, short range) finds a
face, each image upscaled to 256 px first (the detector wants faces of 128 px or more).

A sanity check that samples are faces, not a quality score: on this project's 2-core machine it finds a face in 99.5%
of 64 px UTKFace crops, in none of 100 noise images, and in 17% of 100 smooth colour blobs (8 x 8 noise upscaled).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
from PIL import Image

from toolkit.errors import UserError

DETECT_SIZE = 256


def face_rate(images: Iterable[np.ndarray], *, min_confidence: float = 0.5) -> float:
    """The share of `images` ((H, W, 3) uint8) with at least one detected face."""
    try:
        import mediapipe as mp
    except ImportError:
        raise UserError("face detection needs mediapipe: pip install -e '.[pose]'") from None
    found = total = 0
    with mp.solutions.face_detection.FaceDetection(model_selection=0, min_detection_confidence=min_confidence) as fd:
        for image in images:
            big = np.asarray(Image.fromarray(image).resize((DETECT_SIZE, DETECT_SIZE), Image.BICUBIC))
            found += bool(fd.process(big).detections)
            total += 1
    if not total:
        raise ValueError("face_rate needs at least one image")
    return found / total
