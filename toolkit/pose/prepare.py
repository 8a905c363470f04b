"""Turn a folder of photos into a pose-conditioned dataset folder that `datasets` loads as an imagefolder.

    output_dir/
      images/<stem>.<ext>        the photos (EXIF orientation applied, so keypoints match the pixels)
      conditioning/<stem>.png    OpenPose maps at the photo's size (toolkit.pose.conditioning.draw_map)
      keypoints/<stem>.json      OpenPose JSON in the photo's pixels (written for every photo, people [] if none)
      metadata.jsonl             {"file_name", "conditioning_image_file_name", "text", "joint_threshold"} per kept photo
      detector.json              the detector settings the keypoints were made with (other settings: all re-detected)
      report.json                how many photos were kept, why the others were dropped, and per photo the people
                                 detected, the people counted and the decision

`load_dataset("imagefolder", data_dir=output_dir)` gives `image`, `conditioning_image` (an Image column, from the
`*_file_name` key) and `text`. A re-run with the same detector settings skips photos whose keypoints exist, and
re-applies the filters to them.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections import Counter
from dataclasses import asdict, dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from toolkit.errors import UserError
from toolkit.images import (
    DECODE_ERRORS,
    IMAGE_EXTENSIONS,
    list_image_files,
    open_image,
    read_metadata,
    to_rgb,
)
from toolkit.pose.conditioning import draw_map
from toolkit.pose.keypoints import Pose, load_pose, save_pose

MULTI_PERSON = ("keep", "drop")


@dataclass
class PoseFilter:
    """Which detections make it into the dataset."""

    joint_threshold: float = 0.3  # a joint counts (and is drawn) above this confidence
    min_joints: int = 8  # at least this many body-18 joints above joint_threshold
    min_mean_confidence: float = 0.5  # mean confidence of those joints (of the most prominent person)
    multi_person: str = "keep"  # "keep": a map shows every person found; "drop": photos of several people go

    def __post_init__(self) -> None:
        if self.multi_person not in MULTI_PERSON:
            raise UserError(f"multi_person must be one of {', '.join(MULTI_PERSON)}, got {self.multi_person!r}")

    def reason(self, pose: Pose) -> str | None:
        """Why this pose is dropped, or None if it is kept."""
        if not pose.people:
            return "no person"
        if pose.counted is not None and pose.counted > len(pose.people):
            return "someone missed"  # the map would leave out a person the photo shows
        if self.multi_person == "drop" and len(pose.people) > 1:
            return "several people"
        conf = pose.people[0].body[:, 2]
        good = conf[conf > self.joint_threshold]
        if len(good) < self.min_joints:
            return "too few confident joints"
        if good.mean() < self.min_mean_confidence:
            return "low confidence"
        return None


def stem_of(path: Path, root: Path) -> str:
    """A unique flat name for a photo: its path below the root, with folders joined by '__'."""
    return "__".join(path.relative_to(root).with_suffix("").parts)


def read_captions(root: Path) -> dict[str, str]:
    """Captions by relative file name, from metadata.jsonl or metadata.csv (file_name, text) in the input folder."""
    if (root / "metadata.jsonl").is_file():
        return {row["file_name"]: str(row.get("text", "")) for row in read_metadata(root / "metadata.jsonl", "file_name")}
    if (root / "metadata.csv").is_file():
        with open(root / "metadata.csv", newline="", errors="replace") as f:
            reader = csv.DictReader(f)
            if "file_name" not in (reader.fieldnames or []):
                raise UserError(f"{root / 'metadata.csv'}: needs a file_name column (and text), got {reader.fieldnames}")
            return {row["file_name"]: row.get("text") or "" for row in reader}
    return {}


def caption_for(path: Path, root: Path, captions: dict[str, str]) -> str:
    """The caption of a photo: a .txt beside it wins, then the metadata file, then empty."""
    txt = path.with_suffix(".txt")
    if txt.is_file():
        return txt.read_text().strip()
    return captions.get(path.relative_to(root).as_posix(), "")


def load_photo(path: Path) -> Image.Image:
    """An RGB photo with its EXIF orientation applied; raises DECODE_ERRORS when unreadable."""
    with open_image(path) as image:
        image.load()
        return to_rgb(ImageOps.exif_transpose(image))


def save_photo(path: Path, image: Image.Image, out: Path) -> None:
    """Copy the photo's bytes, or re-encode it when its EXIF orientation had to be applied."""
    with Image.open(path) as original:
        rotated = original.getexif().get(0x0112, 1) != 1
    if rotated:
        image.save(out)
    else:
        shutil.copy2(path, out)


_DETECTOR = None


def _init_worker(options: dict) -> None:
    global _DETECTOR
    from toolkit.pose.detect import MediaPipeDetector, MediaPipeOptions

    _DETECTOR = MediaPipeDetector(MediaPipeOptions(**options))


def detect_one(job: tuple[str, str, str]) -> tuple[str, str | None]:
    """Worker: detect and write keypoints/<stem>.json and the image copy; returns (stem, error or None)."""
    path, stem, out_dir = Path(job[0]), job[1], Path(job[2])
    try:
        image = load_photo(path)
    except DECODE_ERRORS as e:
        return stem, f"unreadable: {type(e).__name__}"
    pose = _DETECTOR(np.asarray(image))
    save_photo(path, image, out_dir / "images" / f"{stem}{path.suffix.lower()}")
    save_pose(pose, out_dir / "keypoints" / f"{stem}.json")
    return stem, None


def detector_settings(options: dict) -> dict:
    """Everything that decides the keypoints: the detector options with their defaults, the calibration's numbers
    and the pose models. Checked here, in the parent process, so that a bad calibration file or a missing MediaPipe
    is a one-line error instead of workers that fail to start."""
    import importlib.util

    from toolkit.pose.calibrate import calibration_option
    from toolkit.pose.detect import MediaPipeOptions
    from toolkit.pose.mediapipe_models import INSTALL, POSE_MODELS

    if importlib.util.find_spec("mediapipe") is None:
        raise UserError(f"pose detection needs MediaPipe: {INSTALL}")
    settings = asdict(MediaPipeOptions(**options))
    calibration = calibration_option(settings["calibration"])
    if calibration is not None:
        settings["calibration_numbers"] = {"shoulders": calibration.shoulders, "hips": calibration.hips}
    settings["models"] = sorted(sha for _, sha, _ in POSE_MODELS.values())
    return json.loads(json.dumps(settings))  # tuples as lists, as they come back from detector.json


@dataclass
class PrepareReport:
    """What prepare_poses did."""

    photos: int
    kept: int
    detected_now: int
    dropped: dict[str, int]
    unreadable: list[str]
    people: dict[str, dict] = field(default_factory=dict)  # per photo: detected, counted, decision

    def table(self) -> str:
        """A short human-readable report."""
        rows = [f"  photos found      {self.photos}", f"  kept              {self.kept}",
                f"  detected this run {self.detected_now} (the rest were done before)"]
        rows += [f"  dropped: {reason:<15}{count}" for reason, count in sorted(self.dropped.items())]
        several = [p for p in self.people.values() if max(p["detected"], p["counted"] or 0) > 1]
        if several:
            kept = sum(p["decision"] == "kept" for p in several)
            rows.append(f"  several people    {len(several)} photos: {kept} kept with everyone in the map, "
                        f"{len(several) - kept} dropped")
        rows += [f"  unreadable        {len(self.unreadable)}" + (f": {', '.join(self.unreadable[:5])}"
                                                                  if self.unreadable else "")]
        return "\n".join(rows)


def write_metadata(out_dir: Path, kept: list[tuple[str, str, str]], joint_threshold: float) -> None:
    """metadata.jsonl for the kept photos: (stem, image file name, caption). The joint threshold the maps were
    drawn with goes along, so that trainers drawing from the keypoints draw the same joints."""
    with open(out_dir / "metadata.jsonl", "w") as f:
        for stem, image_name, text in kept:
            row = {"file_name": f"images/{image_name}", "conditioning_image_file_name": f"conditioning/{stem}.png",
                   "text": text, "joint_threshold": joint_threshold}
            f.write(json.dumps(row) + "\n")


def prepare_poses(input_dir: str | Path, output_dir: str | Path, *, pose_filter: PoseFilter, detector_options: dict,
                  num_workers: int = 2, progress: bool = True) -> PrepareReport:
    """Detect poses in every photo of `input_dir` and write the dataset folder; see the module docstring."""
    from tqdm.auto import tqdm

    root, out = Path(input_dir).resolve(), Path(output_dir)
    photos = {stem_of(p, root): p for p in list_image_files(root, key="input_dir")}
    if not photos:
        raise UserError(f"input_dir {root} holds no images ({', '.join(sorted(IMAGE_EXTENSIONS))}, searched "
                        "recursively): nothing to prepare")
    for sub in ("images", "conditioning", "keypoints"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    settings, recorded = detector_settings(detector_options), out / "detector.json"
    same = recorded.is_file() and json.loads(recorded.read_text()) == settings
    # Keypoints from other detector settings (or from before they were recorded) are detected again, so one
    # dataset never mixes conventions; with the same settings, finished photos are skipped.
    todo = [(str(p), s, str(out)) for s, p in photos.items()
            if not (same and (out / "keypoints" / f"{s}.json").is_file())]
    unreadable = []
    if todo:
        from toolkit.pose.mediapipe_models import pose_landmarker_bundle

        pose_landmarker_bundle()  # built once here, not raced by the workers
        context = get_context("spawn")  # MediaPipe's graph does not survive a fork
        with context.Pool(max(1, num_workers), initializer=_init_worker, initargs=(detector_options,)) as pool:
            for stem, error in tqdm(pool.imap_unordered(detect_one, todo, chunksize=4), total=len(todo),
                                    desc="detecting poses", disable=not progress):
                if error:
                    (out / "keypoints" / f"{stem}.json").unlink(missing_ok=True)  # no stale pose for it
                    unreadable.append(f"{photos[stem].relative_to(root)} ({error})")
    recorded.write_text(json.dumps(settings, indent=2))  # only once every photo has these settings' keypoints
    report = _filter_and_draw(root, out, photos, pose_filter)
    report.detected_now, report.unreadable = len(todo) - len(unreadable), sorted(unreadable)
    (out / "report.json").write_text(json.dumps(asdict(report), indent=2))
    return report


def _filter_and_draw(root: Path, out: Path, photos: dict[str, Path], pose_filter: PoseFilter) -> PrepareReport:
    captions, kept, dropped, people = read_captions(root), [], Counter(), {}
    for stem, path in sorted(photos.items()):
        keypoints = out / "keypoints" / f"{stem}.json"
        if not keypoints.is_file():
            continue  # unreadable photo
        pose = load_pose(keypoints)
        reason = pose_filter.reason(pose)
        people[stem] = {"detected": len(pose.people), "counted": pose.counted, "decision": reason or "kept"}
        conditioning = out / "conditioning" / f"{stem}.png"
        if reason:
            dropped[reason] += 1
            conditioning.unlink(missing_ok=True)  # kept by an earlier run with other thresholds
            continue
        # Redrawn on every run (a few ms each), so a changed joint_threshold reaches every map.
        Image.fromarray(draw_map(pose, threshold=pose_filter.joint_threshold)).save(conditioning)
        kept.append((stem, f"{stem}{path.suffix.lower()}", caption_for(path, root, captions)))
    write_metadata(out, kept, pose_filter.joint_threshold)
    return PrepareReport(photos=len(photos), kept=len(kept), detected_now=0, dropped=dict(dropped), unreadable=[],
                         people=people)
