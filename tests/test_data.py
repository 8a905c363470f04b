"""The data pipeline: image modes, folder scanning, corrupt files, deterministic batches."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from PIL import Image

from toolkit.data.augment import AugmentSettings
from toolkit.data.dataset import Item, MicroBatches, augment_item, batch_indices, build_train_images
from toolkit.data.sources import FolderSource, open_source
from toolkit.errors import UserError
from toolkit.images import list_image_files, to_rgb


def write_images(folder, n, size=(20, 12)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i}.png")


def test_to_rgb_modes():
    grey = to_rgb(Image.new("L", (4, 4), 100))
    assert grey.mode == "RGB" and grey.getpixel((0, 0)) == (100, 100, 100)
    sixteen = to_rgb(Image.fromarray(np.full((4, 4), 65535, dtype=np.uint16)))  # 16-bit grey, full white
    assert sixteen.getpixel((0, 0)) == (255, 255, 255)
    half = to_rgb(Image.fromarray(np.full((4, 4), 32896, dtype=np.uint16)))
    assert half.getpixel((0, 0)) == (128, 128, 128)
    clear = to_rgb(Image.new("RGBA", (4, 4), (10, 20, 30, 0)))  # transparent -> white background
    assert clear.getpixel((0, 0)) == (255, 255, 255)
    palette = Image.new("P", (4, 4), 0)
    palette.putpalette([200, 10, 10] + [0] * 765)
    assert to_rgb(palette).getpixel((0, 0)) == (200, 10, 10)
    assert to_rgb(Image.new("CMYK", (4, 4), (0, 0, 0, 0))).getpixel((0, 0)) == (255, 255, 255)


def test_list_images_recursive_and_metadata(tmp_path):
    write_images(tmp_path / "a", 2)
    write_images(tmp_path / "b" / "c", 3)
    (tmp_path / "notes.txt").write_text("not an image")
    assert len(list_image_files(tmp_path)) == 5
    (tmp_path / "metadata.jsonl").write_text(json.dumps({"file_name": "a/0.png", "text": "x"}) + "\n")
    assert [p.name for p in list_image_files(tmp_path)] == ["0.png"]


def test_paths_cannot_escape_the_root(tmp_path):
    root = tmp_path / "data"
    write_images(root, 1)
    write_images(tmp_path / "outside", 1)
    (root / "metadata.jsonl").write_text(json.dumps({"file_name": "../outside/0.png"}) + "\n")
    with pytest.raises(UserError, match="outside the dataset root"):
        list_image_files(root)
    (root / "metadata.jsonl").unlink()
    os.symlink(tmp_path / "outside" / "0.png", root / "link.png")
    assert [p.name for p in list_image_files(root)] == ["0.png"]  # the symlink out of the root is ignored


def test_bad_metadata_line_is_named(tmp_path):
    write_images(tmp_path, 1)
    (tmp_path / "metadata.jsonl").write_text('{"file_name": "0.png"}\n{"text": "no file"}\n')
    with pytest.raises(UserError, match="metadata.jsonl:2"):
        list_image_files(tmp_path)


def test_corrupt_files_are_skipped_and_counted(tmp_path):
    write_images(tmp_path, 3)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n garbage")
    (tmp_path / "empty.jpg").write_bytes(b"")
    images = build_train_images(FolderSource(list_image_files(tmp_path)), 8, center_crop=True, cache="auto")
    assert len(images) == 3
    assert sorted(os.path.basename(s) for s in images.skipped) == ["broken.png", "empty.jpg"]
    assert images.get(0).shape == (3, 8, 8) and images.get(0).dtype == torch.uint8


def test_empty_and_unreadable_datasets_are_clear_errors(tmp_path):
    with pytest.raises(UserError, match="not found or not a folder"):
        open_source(train_data_dir=str(tmp_path / "nope"), dataset_name=None, image_column="image")
    with pytest.raises(UserError, match="no image files"):
        open_source(train_data_dir=str(tmp_path), dataset_name=None, image_column="image")
    (tmp_path / "bad.png").write_bytes(b"nope")
    with pytest.raises(UserError, match="none of the 1 images could be read"):
        build_train_images(FolderSource(list_image_files(tmp_path)), 8, center_crop=True, cache="auto")


def test_short_side_resize_keeps_aspect_for_random_crops(tmp_path):
    write_images(tmp_path, 1, size=(40, 20))
    images = build_train_images(FolderSource(list_image_files(tmp_path)), 10, center_crop=False, cache="always")
    assert images.get(0).shape == (3, 10, 20)
    pixels, labels = augment_item(images.item(0), 10, AugmentSettings(flip_p=0.5), torch.Generator().manual_seed(0))
    assert pixels.shape == (3, 10, 10) and pixels.dtype == torch.uint8 and labels.abs().sum() == 0


def test_batch_indices_cover_each_epoch_and_are_deterministic():
    stream = sum((batch_indices(10, 4, seed=3, batch_number=k) for k in range(5)), [])  # 20 = two epochs
    assert sorted(stream[:10]) == list(range(10)) and sorted(stream[10:]) == list(range(10))
    assert stream[:10] != stream[10:]  # a new permutation each epoch
    assert batch_indices(10, 4, 3, 2) == stream[8:12]  # crosses the epoch boundary consistently


def test_micro_batches_are_pure_functions_of_k_and_cache_independent(tmp_path):
    write_images(tmp_path, 5)
    files = list_image_files(tmp_path)
    cached = build_train_images(FolderSource(files), 8, center_crop=True, cache="always")
    lazy = build_train_images(FolderSource(files), 8, center_crop=True, cache="never")
    assert lazy.cached is None
    a, b = MicroBatches(cached, 3, seed=0, settings=AugmentSettings(flip_p=0.5)), MicroBatches(lazy, 3, seed=0, settings=AugmentSettings(flip_p=0.5))
    assert torch.equal(a[7][0].pixels, b[7][0].pixels) and torch.equal(a[7][0].pixels, a[7][0].pixels)
    assert not torch.equal(a[7][0].pixels, a[8][0].pixels)


def test_flip_mirrors_pixels():
    img = torch.arange(3 * 2 * 2, dtype=torch.uint8).reshape(3, 2, 2)  # square: no crop, only the flip varies
    outs = [augment_item(Item(img), 2, AugmentSettings(flip_p=0.5), torch.Generator().manual_seed(s))[0] for s in range(20)]
    assert all(torch.equal(o, img) or torch.equal(o, img.flip(-1)) for o in outs)
    assert any(torch.equal(o, img.flip(-1)) for o in outs) and any(torch.equal(o, img) for o in outs)
    assert torch.equal(augment_item(Item(img), 2, AugmentSettings(), torch.Generator().manual_seed(0))[0], img)


def test_dataset_name_local_imagefolder_and_saved_dataset(tmp_path):
    import datasets

    write_images(tmp_path / "folder", 3)
    source, name = open_source(train_data_dir=None, dataset_name=str(tmp_path / "folder"), image_column="image")
    assert len(source) == 3 and source.load(0).mode == "RGB"
    saved = tmp_path / "saved"
    ds = datasets.Dataset.from_dict({"picture": [Image.new("L", (9, 9), 7)] * 2},
                                    features=datasets.Features({"picture": datasets.Image()}))
    ds.save_to_disk(str(saved))
    source, _ = open_source(train_data_dir=None, dataset_name=str(saved), image_column="picture")
    assert len(source) == 2 and source.load(1).getpixel((0, 0)) == (7, 7, 7)
    with pytest.raises(UserError, match="no column 'image'"):
        open_source(train_data_dir=None, dataset_name=str(saved), image_column="image")


def test_a_figures_folder_says_its_flips_keep_sides_and_a_bad_value_names_the_key(tmp_path):
    from toolkit.data.folders import read_pose_folder
    from toolkit.figures.dataset import write_dataset

    root = write_dataset(tmp_path / "figures", 2, 16, seed=0)
    assert [r.flip_swaps_sides for r in read_pose_folder(root)] == [False, False]
    source, _ = open_source(train_data_dir=str(root), dataset_name=None, conditioning_column="conditioning_image")
    assert not source.flip_swaps_sides(0)
    rows = [json.loads(line) for line in (root / "metadata.jsonl").read_text().splitlines()]
    (root / "metadata.jsonl").write_text("".join(json.dumps({k: v for k, v in r.items() if k != "flip_swaps_sides"})
                                                 + "\n" for r in rows))
    assert read_pose_folder(root)[0].flip_swaps_sides  # photos (prepare_poses writes no such key): flips swap
    rows[1]["flip_swaps_sides"] = "no"
    (root / "metadata.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(UserError, match="flip_swaps_sides must be true or false"):
        read_pose_folder(root)
