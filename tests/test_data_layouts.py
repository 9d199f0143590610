"""Datasets exported by other tools (TAO, Roboflow, CVAT, FiftyOne, Label Studio; zip; S3) find every image, and
image look-up errors are one line that says where it looked or which files compete."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from layouts import LAYOUTS, build, upload
from test_data import s3_server  # noqa: F401 - the loopback S3 fixture

from rtdetr_tao.config.dataset import DataSource
from rtdetr_tao.data.categories import category_map, read_categories
from rtdetr_tao.data.coco import CocoDetection
from rtdetr_tao.data.locate import ImageLocator
from rtdetr_tao.data.synthetic import write_split
from rtdetr_tao.errors import DataError


@pytest.fixture(scope="module")
def split(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("split")
    write_split(root, 4, size=(40, 32), seed=3)
    return root


def _dataset(layout: dict, cache: Path) -> CocoDetection:
    categories = read_categories(layout["json_file"], str(cache))
    cmap = category_map(categories, layout["num_classes"], source=layout["json_file"])
    source = DataSource(image_dir=layout["image_dir"], json_file=layout["json_file"])
    return CocoDetection(source, cmap, eval_size=(32, 32), cache_dir=str(cache))


def _reference(split: Path, tmp_path: Path) -> list[torch.Tensor]:
    layout = {"image_dir": str(split / "images"), "json_file": str(split / "annotations.json"), "num_classes": 4}
    dataset = _dataset(layout, tmp_path / "ref-cache")
    return [dataset[i][0] for i in range(len(dataset))]


@pytest.mark.parametrize("name", list(LAYOUTS))
def test_every_layout_finds_every_image(name, split, tmp_path) -> None:
    layout = build(name, split, tmp_path / name)
    dataset = _dataset(layout, tmp_path / "cache")
    assert len(dataset) == 4
    for image, expected in zip((dataset[i][0] for i in range(4)), _reference(split, tmp_path), strict=True):
        torch.testing.assert_close(image, expected)  # the same pixels: the right file, in id order


@pytest.mark.parametrize("name", ["tao_tar", "roboflow"])
def test_layouts_served_from_s3(name, split, tmp_path, s3_server) -> None:  # noqa: F811
    """TAO's tarball as an S3 object, Roboflow's export folder as an S3 prefix."""
    layout = upload(build(name, split, tmp_path / name), tmp_path / name, "exports")
    dataset = _dataset(layout, tmp_path / "cache")
    for i, expected in enumerate(_reference(split, tmp_path)):
        torch.testing.assert_close(dataset[i][0], expected)


def _tree(root: Path, *files: str) -> Path:
    for name in files:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(b"x")
    return root


def test_locator_order_subfolders_and_absolute_names(tmp_path) -> None:
    root = _tree(tmp_path / "r", "a.jpg", "sub/b.jpg", "x/y/c.jpg", "x/z/c.jpg")
    find = ImageLocator(root, "ann.json").find
    assert find("a.jpg") == root / "a.jpg"
    assert find("sub/b.jpg") == root / "sub/b.jpg" and find("./sub/b.jpg") == root / "sub/b.jpg"
    assert find("b.jpg") == root / "sub/b.jpg"  # unique basename
    assert find(str(root / "x/z/c.jpg")) == root / "x/z/c.jpg"  # absolute, existing
    assert find("/home/someone/export/y/c.jpg") == root / "x/y/c.jpg"  # absolute elsewhere: longest shared suffix
    assert find("C:\\data\\z\\c.jpg") == root / "x/z/c.jpg"  # Windows separators
    single = _tree(tmp_path / "s", "images/d.jpg")  # an archive's single top-level folder
    assert ImageLocator(single, "ann.json").find("d.jpg") == single / "images/d.jpg"


def test_locator_errors_are_one_line_and_specific(tmp_path) -> None:
    root = _tree(tmp_path / "r", "x/y/c.jpg", "x/z/c.jpg", "other.jpg")
    locator = ImageLocator(root, "ann.json")
    with pytest.raises(DataError) as ambiguous:
        locator.find("c.jpg")
    message = str(ambiguous.value)
    assert "\n" not in message and "matches 2 files" in message
    assert str(root / "x/y/c.jpg") in message and str(root / "x/z/c.jpg") in message
    with pytest.raises(DataError) as missing:
        locator.find("sub/nope.jpg")
    message = str(missing.value)
    assert "\n" not in message and str(root / "sub/nope.jpg") in message and f"anywhere under {root}" in message


def test_locator_walks_the_tree_once(tmp_path, monkeypatch) -> None:
    import os

    root = _tree(tmp_path / "r", "notes.txt", *(f"deep/{i}.jpg" for i in range(20)))
    walks = []
    real_walk = os.walk
    monkeypatch.setattr(os, "walk", lambda *a, **k: walks.append(a) or real_walk(*a, **k))
    locator = ImageLocator(root, "ann.json")
    assert [locator.find(f"{i}.jpg").name for i in range(20)] == [f"{i}.jpg" for i in range(20)]
    assert len(walks) == 1


def test_missing_image_fails_at_load_or_is_skipped(split, tmp_path) -> None:
    layout = build("tao_tar", split, tmp_path / "t")
    data = json.loads(Path(layout["json_file"]).read_text())
    data["images"][1]["file_name"] = "gone.jpg"
    Path(layout["json_file"]).write_text(json.dumps(data))
    with pytest.raises(DataError, match=r"image 'gone.jpg' not found: looked for .*images/gone.jpg.*skip_corrupt"):
        _dataset(layout, tmp_path / "cache")
    cmap = category_map(read_categories(layout["json_file"]), 4)
    source = DataSource(image_dir=layout["image_dir"], json_file=layout["json_file"])
    dataset = CocoDetection(source, cmap, eval_size=(32, 32), cache_dir=str(tmp_path / "cache"), skip_corrupt=True)
    assert dataset[1] is None and dataset[0] is not None


@pytest.mark.parametrize(
    ("name", "message"), [("/etc/evil", "absolute path"), ("a/../../evil", "'..'"), ("link", "is a link")]
)
def test_unsafe_zip_archives_are_rejected(tmp_path, name, message) -> None:
    import zipfile

    from rtdetr_tao.data.sources import resolve_image_dir

    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        info = zipfile.ZipInfo(name)
        if name == "link":
            info.external_attr = (0o120777 << 16) | 0  # a symlink entry, as `zip --symlinks` writes it
        zf.writestr(info, "../../etc/passwd" if name == "link" else "evil")
    with pytest.raises(DataError, match=message):
        resolve_image_dir(str(archive), str(tmp_path / "cache"))
    assert not list((tmp_path / "cache" / "extracted").glob("[!.]*"))


# --- errors in worker processes --------------------------------------------------------------------------------------


def _broken_spec(split: Path, tmp_path: Path, workers: int) -> Path:
    import yaml
    from test_train import TINY_MODEL

    layout = build("cvat", split, tmp_path / "cvat")
    broken = next(Path(layout["image_dir"]).iterdir())
    broken.write_bytes(b"not an image")
    source = {"image_dir": layout["image_dir"], "json_file": layout["json_file"]}
    spec = {
        "results_dir": str(tmp_path / "results"),
        "model": TINY_MODEL,
        "dataset": {
            "train_data_sources": [source],
            "val_data_sources": source,
            "num_classes": 4,
            "batch_size": 4,
            "workers": workers,
            "augmentation": {"train_spatial_size": [32, 32], "eval_spatial_size": [32, 32], "multi_scales": []},
        },
        "train": {"num_epochs": 1, "device": "cpu"},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def test_a_data_error_in_a_worker_is_the_same_one_line(split, tmp_path) -> None:
    from rtdetr_tao.config import load_spec
    from rtdetr_tao.data.categories import category_map_from_sources
    from rtdetr_tao.data.loader import build_train_loader

    spec = load_spec(str(_broken_spec(split, tmp_path, workers=0)), []).spec.dataset
    cmap = category_map_from_sources(spec, spec.train_data_sources)
    messages = []
    for workers in (0, 2):
        loader = build_train_loader(
            spec.model_copy(update={"workers": workers}), num_epochs=1, stop_epoch=1, seed=0, category_map=cmap
        )
        with pytest.raises(DataError) as error:
            list(loader)
        messages.append(str(error.value))
    assert messages[0] == messages[1] and "\n" not in messages[1] and "cannot read image" in messages[1]


def test_a_worker_error_reaches_the_cli_as_one_line(split, tmp_path, capsys) -> None:
    from rtdetr_tao.cli import main

    assert main(["train", "-e", str(_broken_spec(split, tmp_path, workers=1))]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "error" in line.lower()]
    assert len(err) == 1 and err[0].startswith("rtdetr: error: ") and "cannot read image" in err[0], err
    assert "Caught" not in err[0] and "Traceback" not in capsys.readouterr().err


@pytest.mark.slow  # ~45 s: torchrun and two workers importing torch
def test_a_torchrun_worker_error_reaches_the_cli_as_one_line(split, tmp_path, capfd) -> None:
    """Two CPU processes through torchrun; both fail on the broken image: one line, exit 2, no torchrun report."""
    from rtdetr_tao.cli import main

    spec = str(_broken_spec(split, tmp_path, workers=0))
    assert main(["train", "-e", spec, "train.num_gpus=2", "train.gpu_ids=[0,1]", "dataset.batch_size=2"]) == 2
    err = capfd.readouterr().err
    lines = [line for line in err.splitlines() if "error:" in line.lower()]
    assert len(lines) == 1 and lines[0].startswith("rtdetr: error: ") and "cannot read image" in lines[0], err
    assert "ChildFailedError" not in err and "Traceback" not in err


def test_inference_sources_may_be_single_images_local_or_on_s3(split, tmp_path, s3_server) -> None:  # noqa: F811
    import boto3

    from rtdetr_tao.data.preprocess import source_images

    image = split / "images" / "000002.jpg"
    assert source_images(str(image)) == [image]
    client = boto3.client("s3")
    client.create_bucket(Bucket="single")
    client.upload_file(str(image), "single", "photos/000002.jpg")
    [local] = source_images("s3://single/photos/000002.jpg", str(tmp_path))
    assert local.read_bytes() == image.read_bytes()
    assert len(source_images(str(split / "images"))) == 4
