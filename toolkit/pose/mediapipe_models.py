"""MediaPipe's bundled models, offline: the import with a one-line error, and a multi-person pose landmarker.

mediapipe 0.10.14's legacy `solutions.pose` finds one person per image. Its Tasks API (`PoseLandmarker`) finds
several (`num_poses`), but wants a `.task` bundle that the wheel does not ship and that would have to be
downloaded. The wheel does ship the two networks that the legacy graph runs (`pose_detection.tflite`,
`pose_landmark_full.tflite`); the Tasks API only needs to know how each normalises its input, which the legacy
graph hard-codes: the detector takes [-1, 1], the landmark model [0, 1]. So the bundle is built once, here, from
the wheel's own files (SHA-256-checked), with that normalisation written into their metadata by MediaPipe's own
metadata writer, and cached. Nothing is downloaded.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from pathlib import Path

from toolkit.errors import UserError

BUNDLE_FORMAT = "1: metadata = image input range only"  # change it when the way the bundle is built changes
INSTALL = "pip install 'anatomy-toolkit[pose]' (mediapipe==0.10.14, Python <= 3.12)"
# bundle member: (file in the wheel's modules/, its SHA-256 in mediapipe 0.10.14, input range low end)
POSE_MODELS = {
    "pose_detector.tflite": ("pose_detection/pose_detection.tflite",
                             "9ba9dd3d42efaaba86b4ff0122b06f29c4122e756b329d89dca1e297fd8f866c", -1.0),
    "pose_landmarks_detector.tflite": ("pose_landmark/pose_landmark_full.tflite",
                                       "e9a5c5cb17f736fafd4c2ec1da3b3d331d6edbe8a0d32395855aeb2cdfd64b9f", 0.0),
}


def import_mediapipe():
    """The mediapipe module, or a one-line UserError saying how to install it."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # MediaPipe's C++ start-up chatter (no GPU, no EGL)
    try:
        import mediapipe
    except ImportError:
        raise UserError(f"pose detection needs MediaPipe: {INSTALL}") from None
    return mediapipe


def default_cache() -> Path:
    """Where the built bundle is kept: $XDG_CACHE_HOME (or ~/.cache)/anatomy-toolkit/mediapipe."""
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "anatomy-toolkit" / "mediapipe"


def _with_normalisation(model: bytes, low: float) -> bytes:
    """The tflite model with image-input metadata saying its float input spans [low, 1] for pixels 0..255."""
    from mediapipe.tasks.python.metadata.metadata_writers import metadata_writer

    writer = metadata_writer.MetadataWriter.create(bytearray(model))
    std = 255.0 / (1.0 - low)  # (pixel - mean) / std maps 0 -> low and 255 -> 1
    writer.add_image_input(norm_mean=[-low * std], norm_std=[std])
    writer.add_general_info("anatomy-toolkit pose", "built from mediapipe 0.10.14's bundled pose models")
    return bytes(writer.populate()[0])


def pose_landmarker_bundle(cache_dir: Path | None = None) -> Path:
    """The `.task` bundle of the wheel's pose models, built once under `cache_dir` (atomically) and reused."""
    key = hashlib.sha256(repr(sorted(POSE_MODELS.items())).encode() + BUNDLE_FORMAT.encode()).hexdigest()[:12]
    target = (cache_dir or default_cache()) / f"pose_landmarker_full_{key}.task"  # new models or format: new file
    if target.is_file():
        return target  # without importing MediaPipe: prepare_poses' parent process only needs the path
    modules = Path(import_mediapipe().__file__).parent / "modules"
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for member, (source, sha256, low) in POSE_MODELS.items():
            data = (modules / source).read_bytes()
            if hashlib.sha256(data).hexdigest() != sha256:
                raise UserError(f"{modules / source} is not the model of mediapipe 0.10.14: {INSTALL}")
            bundle.writestr(member, _with_normalisation(data, low))
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(f".{os.getpid()}.partial")
    partial.write_bytes(buffer.getvalue())
    os.replace(partial, target)  # atomic: a concurrent builder writes the same bytes
    return target
