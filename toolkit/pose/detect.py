"""Pose detection from photos, offline: a small backend interface and the MediaPipe backend.

MediaPipe (`pip install 'anatomy-toolkit[pose]'`, mediapipe==0.10.14) runs through its Tasks API on the pose models
that ship in the wheel (`toolkit.pose.mediapipe_models`: the `full` detector, several people per image). Each step
below was measured against ground truth in docs/poses.md before it became a default:
- `min_size`: upscale images whose short side is smaller, so that small people are found;
- `tta`: test-time augmentation with the mirrored image (left and right swapped back). "auto" re-runs only the hard
  cases: nobody found, or a person whose limb joints average below `tta_threshold`; "flip" always re-runs. Each
  person keeps whichever of its two detections is more confident (averaging a front view with a back view, when the
  two passes disagree on which way the person faces, gives neither);
- `calibration`: MediaPipe's shoulders, hips and neck moved to OpenPose-18 conventions (`toolkit.pose.calibrate`);
- `count_people`: an independent count of the people (`toolkit.pose.people`), kept in `Pose.counted`, so that a photo
  with someone the detector missed can be flagged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
from PIL import Image

from toolkit.errors import UserError
from toolkit.pose.calibrate import calibration_option
from toolkit.pose.convert import mediapipe33_to_openpose18
from toolkit.pose.keypoints import FLIP_18, Person, Pose, flip_person
from toolkit.pose.mediapipe_models import import_mediapipe, pose_landmarker_bundle

TTA_CHOICES = ("off", "auto", "flip")
LIMB_JOINTS = list(range(2, 14))  # shoulders to ankles: the joints that make a pose
CONFIDENT = 0.3  # a joint above this visibility is drawn (prepare_poses' default joint_threshold)


class PoseDetector(Protocol):
    """Anything that turns an RGB uint8 image (H, W, 3) into a Pose in that image's pixels."""

    def __call__(self, image: np.ndarray) -> Pose: ...


@dataclass
class MediaPipeOptions:
    """Test-time options of the MediaPipe backend."""

    min_detection_confidence: float = 0.3
    min_size: int = 256
    max_people: int = 4
    tta: str = "auto"
    tta_threshold: float = 0.5
    calibration: str | None = "default"  # "default" (the shipped file), a calibration file, or None / "none"
    count_people: bool = True
    hands: bool = False  # also run solutions.hands and attach hands to the nearest wrists

    def __post_init__(self) -> None:
        if self.tta not in TTA_CHOICES:
            raise UserError(f"tta must be one of {', '.join(TTA_CHOICES)}, got {self.tta!r}")
        if self.max_people < 1 or self.min_size < 1:
            raise UserError(f"max_people and min_size must be >= 1, got {self.max_people} and {self.min_size}")


def limb_confidence(body: np.ndarray) -> float:
    """Mean confidence of a body-18's shoulders to ankles: how sure the detector is of the pose."""
    return float(body[LIMB_JOINTS, 2].mean())


def prominence(body: np.ndarray) -> float:
    """Area of the box around a body's confident joints: the most prominent person is listed first."""
    points = body[body[:, 2] > CONFIDENT, :2]
    return float(np.prod(points.max(0) - points.min(0))) if len(points) >= 2 else 0.0


def same_person(a: np.ndarray, b: np.ndarray) -> bool:
    """Whether two body-18 detections in one image are the same person: their shared joints lie within a fifth of
    the larger one's box, as labelled or with left and right swapped (two passes may disagree on the facing)."""
    extent = [float(np.ptp(x[x[:, 2] > 0, :2], axis=0).max()) if (x[:, 2] > 0).sum() >= 2 else 0.0 for x in (a, b)]
    size = max(*extent, 1.0)
    for other in (b, b[FLIP_18]):
        shared = (a[:, 2] > 0) & (other[:, 2] > 0)
        if shared.sum() >= 3 and np.median(np.linalg.norm(a[shared, :2] - other[shared, :2], axis=1)) <= 0.2 * size:
            return True
    return False


def more_confident(first: list[np.ndarray], second: list[np.ndarray]) -> list[np.ndarray]:
    """Each person of `first` or its match in `second`, whichever is more confident; then the people only `second`
    found. (People within one pass are already distinct: the detector suppresses overlapping boxes.)"""
    out, used = [], set()
    for body in first:
        match = next((i for i, other in enumerate(second) if i not in used and same_person(body, other)), None)
        if match is not None:
            used.add(match)
            body = max(body, second[match], key=limb_confidence)
        out.append(body)
    return out + [other for i, other in enumerate(second) if i not in used]


class MediaPipeDetector:
    """Body-18 keypoints of every person MediaPipe Pose finds (up to `max_people`), fully offline."""

    def __init__(self, options: MediaPipeOptions | None = None):
        self.options = o = options or MediaPipeOptions()
        mp = import_mediapipe()
        from mediapipe.tasks.python import BaseOptions, vision

        self._mp = mp
        self._pose = vision.PoseLandmarker.create_from_options(vision.PoseLandmarkerOptions(
            base_options=BaseOptions(model_asset_path=str(pose_landmarker_bundle())),
            running_mode=vision.RunningMode.IMAGE, num_poses=o.max_people,
            min_pose_detection_confidence=o.min_detection_confidence,
            min_pose_presence_confidence=o.min_detection_confidence))
        self._calibration = calibration_option(o.calibration)
        self._counter = None
        if o.count_people:
            from toolkit.pose.people import PeopleCounter

            self._counter = PeopleCounter()
        self._hands = None
        if o.hands:
            self._hands = mp.solutions.hands.Hands(static_image_mode=True, max_num_hands=2 * o.max_people,
                                                   model_complexity=1,
                                                   min_detection_confidence=o.min_detection_confidence)

    def close(self) -> None:
        """Release MediaPipe's graphs."""
        self._pose.close()
        for graph in (self._counter, self._hands):
            if graph is not None:
                graph.close()

    def _detect_hands(self, image: np.ndarray) -> list[np.ndarray]:
        """Each detected hand as (21, 3) in pixels; the confidence is MediaPipe's hand score."""
        result = self._hands.process(np.ascontiguousarray(image))
        if not result.multi_hand_landmarks:
            return []
        h, w = image.shape[:2]
        scores = [c.classification[0].score for c in result.multi_handedness]
        return [np.array([(m.x * w - 0.5, m.y * h - 0.5, score) for m in marks.landmark])  # pixel centres
                for marks, score in zip(result.multi_hand_landmarks, scores, strict=True)]

    def _pass(self, image: np.ndarray) -> list[np.ndarray]:
        """Body-18 (18, 3) of each person in `image` pixels from one MediaPipe pass, upscaling small images."""
        h, w = image.shape[:2]
        scale = max(1.0, self.options.min_size / min(h, w))
        if scale > 1.0:
            image = np.asarray(Image.fromarray(image).resize((round(w * scale), round(h * scale)),
                                                             Image.Resampling.BICUBIC))
        frame = self._mp.Image(image_format=self._mp.ImageFormat.SRGB, data=np.ascontiguousarray(image))
        # Normalised coordinates -> pixel centres of the original image (x = 0 is the left pixel's centre), so that
        # a mirrored image's detections mirror exactly (x -> W - 1 - x).
        return [mediapipe33_to_openpose18(np.array([(m.x * w - 0.5, m.y * h - 0.5, m.visibility) for m in marks]))
                for marks in self._pose.detect(frame).pose_landmarks]  # (33, 3) -> (18, 3) each

    def _bodies(self, image: np.ndarray) -> list[np.ndarray]:
        """The people of one pass, or of both passes where test-time augmentation asks for the mirrored one."""
        bodies = self._pass(image)
        o = self.options
        sure = bodies and all(limb_confidence(b) >= o.tta_threshold for b in bodies)
        if o.tta == "off" or (o.tta == "auto" and sure):
            return bodies
        width = image.shape[1]
        mirrored = [flip_person(Person(b), width).body for b in self._pass(np.ascontiguousarray(image[:, ::-1]))]
        return more_confident(bodies, mirrored)

    def __call__(self, image: np.ndarray) -> Pose:
        """Detect every person (most prominent first) in an RGB uint8 image (H, W, 3)."""
        h, w = image.shape[:2]
        # A detection with fewer than 3 confident joints is never drawn, so it is not a person of the map.
        bodies = [b for b in self._bodies(image) if (b[:, 2] > CONFIDENT).sum() >= 3]
        if self._calibration is not None:
            bodies = [self._calibration(b) for b in bodies]
        bodies = sorted(bodies, key=prominence, reverse=True)[:self.options.max_people]
        counted = self._counter(image, bodies).count if self._counter is not None else None
        people = [Person(b) for b in bodies]
        if self._hands is not None:
            hands = self._detect_hands(image)
            for person in people:
                person.left_hand, person.right_hand = assign_hands(hands, person.body)
                hands = [x for x in hands if x is not person.left_hand and x is not person.right_hand]
        return Pose(w, h, people, counted=counted)


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
        mp = import_mediapipe()
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
