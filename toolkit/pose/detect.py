"""Pose detection from photos, offline: a small backend interface and the MediaPipe backend.

MediaPipe (`pip install 'anatomy-toolkit[pose]'`, mediapipe==0.10.14) uses the legacy `solutions.pose` graph with
`model_complexity=1`, the only pose model whose weights ship inside the wheel (0 and 2 try to download theirs).
It finds at most ONE person per image. Test-time options, each measured in docs/poses.md rather than assumed:
- `min_size`: upscale images whose short side is smaller, so that small people are found;
- `flip_average`: also detect on the mirrored image and average the two (left/right swapped back);
- `person_crop`: a second pass on a square crop around the first detection, so the person fills the input.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from toolkit.errors import UserError
from toolkit.pose.convert import mediapipe33_to_openpose18
from toolkit.pose.keypoints import Person, Pose, flip_person


class PoseDetector(Protocol):
    """Anything that turns an RGB uint8 image (H, W, 3) into a Pose in that image's pixels."""

    def __call__(self, image: np.ndarray) -> Pose: ...


def _import_mediapipe():
    try:
        import mediapipe
    except ImportError:
        raise UserError("pose detection needs MediaPipe: pip install 'anatomy-toolkit[pose]' "
                        "(mediapipe==0.10.14, Python <= 3.12)") from None
    return mediapipe


@dataclass
class MediaPipeOptions:
    """Test-time options of the MediaPipe backend."""

    min_detection_confidence: float = 0.3
    min_size: int = 256
    flip_average: bool = False
    person_crop: bool = False
    crop_margin: float = 0.25
    hands: bool = False  # also run solutions.hands and attach hands to the body's wrists


class MediaPipeDetector:
    """Body-18 keypoints from MediaPipe Pose (one person per image), fully offline."""

    def __init__(self, options: MediaPipeOptions | None = None):
        self.options = options or MediaPipeOptions()
        mp = _import_mediapipe()
        self._pose = mp.solutions.pose.Pose(static_image_mode=True, model_complexity=1, enable_segmentation=False,
                                            min_detection_confidence=self.options.min_detection_confidence)
        self._hands = None
        if self.options.hands:
            self._hands = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2, model_complexity=1,
                                                   min_detection_confidence=self.options.min_detection_confidence)

    def close(self) -> None:
        """Release MediaPipe's graphs."""
        self._pose.close()
        if self._hands is not None:
            self._hands.close()

    def _detect_hands(self, image: np.ndarray) -> list[np.ndarray]:
        """Each detected hand as (21, 3) in pixels; the confidence is MediaPipe's hand score."""
        result = self._hands.process(np.ascontiguousarray(image))
        if not result.multi_hand_landmarks:
            return []
        h, w = image.shape[:2]
        scores = [c.classification[0].score for c in result.multi_handedness]
        return [np.array([(m.x * w, m.y * h, score) for m in marks.landmark])
                for marks, score in zip(result.multi_hand_landmarks, scores, strict=True)]

    def _raw(self, image: np.ndarray) -> np.ndarray | None:
        """Body-18 (18, 3) in `image` pixels from one MediaPipe pass, upscaling small images; None if no person."""
        h, w = image.shape[:2]
        scale = max(1.0, self.options.min_size / min(h, w))
        if scale > 1.0:
            size = (round(w * scale), round(h * scale))
            image = np.asarray(Image.fromarray(image).resize(size, Image.Resampling.BICUBIC))
        result = self._pose.process(np.ascontiguousarray(image))
        if result.pose_landmarks is None:
            return None
        hs, ws = image.shape[:2]
        marks = np.array([(m.x * ws / scale, m.y * hs / scale, m.visibility) for m in result.pose_landmarks.landmark])
        return mediapipe33_to_openpose18(marks)  # (33, 3) -> (18, 3)

    def _with_flip(self, image: np.ndarray) -> np.ndarray | None:
        body = self._raw(image)
        if not self.options.flip_average:
            return body
        mirrored = self._raw(image[:, ::-1])
        if mirrored is None or body is None:
            return body if mirrored is None else flip_person(Person(mirrored), image.shape[1]).body
        back = flip_person(Person(mirrored), image.shape[1]).body
        weights = np.stack([body[:, 2], back[:, 2]])  # (2, 18) visibilities as weights
        total = np.maximum(weights.sum(0), 1e-9)
        xy = (body[:, :2] * weights[0, :, None] + back[:, :2] * weights[1, :, None]) / total[:, None]
        return np.concatenate([xy, weights.mean(0)[:, None]], axis=1)

    def _crop_pass(self, image: np.ndarray, body: np.ndarray) -> np.ndarray:
        found = body[body[:, 2] > 0.3]
        if len(found) < 4:
            return body
        (x0, y0), (x1, y1) = found[:, :2].min(0), found[:, :2].max(0)
        side = max(x1 - x0, y1 - y0) * (1 + 2 * self.options.crop_margin)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        h, w = image.shape[:2]
        left, top = int(max(0, cx - side / 2)), int(max(0, cy - side / 2))
        right, bottom = int(min(w, cx + side / 2)), int(min(h, cy + side / 2))
        if (right - left) * (bottom - top) > 0.8 * w * h:  # the person already fills the image
            return body
        cropped = self._with_flip(image[top:bottom, left:right])
        if cropped is None:
            return body
        cropped[:, 0] += left
        cropped[:, 1] += top
        return cropped

    def __call__(self, image: np.ndarray) -> Pose:
        """Detect the (single) person in an RGB uint8 image (H, W, 3)."""
        h, w = image.shape[:2]
        body = self._with_flip(image)
        if body is None:
            return Pose(w, h, [])
        if self.options.person_crop:
            body = self._crop_pass(image, body)
        person = Person(body)
        if self._hands is not None:
            person.left_hand, person.right_hand = assign_hands(self._detect_hands(image), body)
        return Pose(w, h, [person])


def assign_hands(hands: list[np.ndarray], body: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
    """(left, right): each hand goes to the body wrist nearest its own wrist point (hand point 0).

    MediaPipe's handedness label assumes a mirrored selfie image, so it is not used; a hand near neither wrist
    (farther than the forearm's length, or no wrist found) is dropped.
    """
    sides = {}
    for name, wrist, elbow in (("right", 4, 3), ("left", 7, 6)):
        if body[wrist, 2] > 0:
            reach = np.linalg.norm(body[wrist, :2] - body[elbow, :2]) if body[elbow, 2] > 0 else np.inf
            sides[name] = (body[wrist, :2], max(reach, 1.0))
    found: dict[str, tuple[float, np.ndarray]] = {}
    for hand in hands:
        options = [(np.linalg.norm(hand[0, :2] - xy) / reach, name) for name, (xy, reach) in sides.items()]
        if not options:
            break
        dist, name = min(options)
        if dist <= 1.0 and (name not in found or dist < found[name][0]):
            found[name] = (dist, hand)
    return (found["left"][1] if "left" in found else None), (found["right"][1] if "right" in found else None)


class FaceChecker:
    """Is there a plausible face? MediaPipe face detection (short-range model, bundled in the wheel)."""

    def __init__(self, min_confidence: float = 0.5):
        mp = _import_mediapipe()
        self._faces = mp.solutions.face_detection.FaceDetection(model_selection=0,
                                                                 min_detection_confidence=min_confidence)

    def __call__(self, image: np.ndarray) -> float:
        """The best face score in an RGB uint8 image (H, W, 3); 0.0 when no face passes the threshold."""
        result = self._faces.process(np.ascontiguousarray(image))
        return max((d.score[0] for d in result.detections or []), default=0.0)

    def close(self) -> None:
        """Release MediaPipe's graph."""
        self._faces.close()


def keypoints_from_controlnet_aux(points, width: int, height: int, count: int) -> np.ndarray | None:
    """controlnet_aux keypoints (normalised x, y; None or negative when missing) -> (count, 3) in pixels."""
    if points is None:
        return None
    out = np.zeros((count, 3))
    for i, kp in enumerate(points[:count]):
        if kp is not None and kp.x >= 0 and kp.y >= 0:
            out[i] = (kp.x * width, kp.y * height, getattr(kp, "score", 1.0))
    return out


class ControlnetAuxDetector:
    """controlnet_aux's OpenposeDetector (CMU OpenPose, several people per image) from a local weights folder.

    The folder holds body_pose_model.pth (and hand_pose_model.pth, facenet.pth), e.g. a download of
    lllyasviel/Annotators. Nothing is fetched: a missing folder is an error. Note that controlnet_aux unpickles
    these .pth files itself; only use weights from a source you trust.
    """

    def __init__(self, weights_dir: str, hands: bool = False, face: bool = False):
        try:
            from controlnet_aux import OpenposeDetector
        except ImportError:
            raise UserError("the controlnet_aux backend needs `pip install controlnet-aux`") from None
        from pathlib import Path

        if not (Path(weights_dir) / "body_pose_model.pth").is_file():
            raise UserError(f"no body_pose_model.pth in {weights_dir} (a local copy of lllyasviel/Annotators)")
        self._detector = OpenposeDetector.from_pretrained(weights_dir)
        self.hands, self.face = hands, face

    def __call__(self, image: np.ndarray) -> Pose:
        """Detect every person in an RGB uint8 image (H, W, 3)."""
        h, w = image.shape[:2]
        people = []
        for result in self._detector.detect_poses(image, include_hand=self.hands, include_face=self.face):
            body = keypoints_from_controlnet_aux(result.body.keypoints, w, h, 18)
            people.append(Person(body, keypoints_from_controlnet_aux(result.left_hand, w, h, 21),
                                 keypoints_from_controlnet_aux(result.right_hand, w, h, 21),
                                 keypoints_from_controlnet_aux(result.face, w, h, 68)))
        return Pose(w, h, people)
