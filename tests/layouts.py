"""Datasets laid out exactly as other tools export them, built from one synthetic split.

Each builder takes the split's image folder and COCO dict and writes the other tool's layout under ``root``; it
returns the ``{image_dir, json_file}`` a user would put in the spec, plus ``num_classes``.

* ``tao_tar``: TAO's ``images.tar.gz`` holding ``images/<file>``, ``file_name`` the bare file name.
* ``roboflow``: Roboflow's COCO export, ``train/_annotations.coco.json`` beside renamed images
  (``<stem>_jpg.rf.<hash>.jpg``), category 0 the dataset's super-category and the classes 1..N below it.
* ``cvat``: CVAT's "COCO 1.0" export (a zip: ``annotations/instances_default.json`` and ``images/``), unzipped.
* ``cvat_zip``: the same, the zip itself as ``image_dir``.
* ``fiftyone``: FiftyOne's ``COCODetectionDataset`` export, ``data/`` + ``labels.json``, ids from 1.
* ``fiftyone_nested``: the same with ``file_name`` holding sub-folders (``rel_dir`` export of a nested tree).
* ``labelstudio``: Label Studio's COCO export, ``images/<hash>-<file>`` + ``result.json`` with
  ``file_name: images/<hash>-<file>`` and ids from 0, ``image_dir`` pointing at ``images/``; every other
  ``file_name`` with Windows separators (``images\\<hash>-<file>``), as a Windows-made file has them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import tarfile
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Layout = dict[str, Any]


def _remap(coco: dict, ids: dict[int, int]) -> dict:
    """``coco`` with category ids replaced by ``ids[old]``."""
    out = json.loads(json.dumps(coco))
    for ann in out["annotations"]:
        ann["category_id"] = ids[ann["category_id"]]
    out["categories"] = [{**c, "id": ids[c["id"]]} for c in out["categories"]]
    return out


def _rename(coco: dict, new_name: Callable[[str], str]) -> dict:
    out = json.loads(json.dumps(coco))
    for image in out["images"]:
        image["file_name"] = new_name(image["file_name"])
    return out


def _write(path: Path, data: dict) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data))
    return path


def _copy_images(images: Path, coco_before: dict, coco_after: dict, target: Path) -> None:
    for old, new in zip(coco_before["images"], coco_after["images"], strict=True):
        dest = target / new["file_name"]
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(images / old["file_name"], dest)


def tao_tar(images: Path, coco: dict, root: Path) -> Layout:
    archive = root / "images.tar.gz"
    root.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive, "w:gz") as tar:
        for image in coco["images"]:
            tar.add(images / image["file_name"], arcname=f"images/{image['file_name']}")
    return {"image_dir": str(archive), "json_file": str(_write(root / "annotations.json", coco)), "num_classes": 4}


def roboflow(images: Path, coco: dict, root: Path) -> Layout:
    stem = lambda name: name.rsplit(".", 1)[0]  # noqa: E731
    digest = lambda name: hashlib.md5(name.encode()).hexdigest()  # noqa: E731 - Roboflow's rf.<hash> suffix
    renamed = _rename(coco, lambda n: f"{stem(n)}_jpg.rf.{digest(n)}.jpg")
    ids = {c["id"]: i + 1 for i, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}
    data = _remap(renamed, ids)
    data["categories"] = [{"id": 0, "name": "shapes", "supercategory": "none"}] + [
        {**c, "supercategory": "shapes"} for c in data["categories"]
    ]
    data["info"] = {"year": "2024", "version": "1", "description": "Exported from roboflow.com", "url": ""}
    data["licenses"] = [{"id": 1, "url": "https://creativecommons.org/licenses/by/4.0/", "name": "CC BY 4.0"}]
    for image in data["images"]:
        image |= {"license": 1, "date_captured": "2024-01-01T00:00:00+00:00"}
    for ann in data["annotations"]:
        ann["segmentation"] = []
    folder = root / "train"
    _copy_images(images, coco, data, folder)
    json_file = _write(folder / "_annotations.coco.json", data)
    return {"image_dir": str(folder), "json_file": str(json_file), "num_classes": 5}


def _cvat_tree(images: Path, coco: dict, root: Path) -> dict:
    ids = {c["id"]: i + 1 for i, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}
    data = _remap(coco, ids)
    data["licenses"] = [{"name": "", "id": 0, "url": ""}]
    data["info"] = {"contributor": "", "date_created": "", "description": "", "url": "", "version": "", "year": ""}
    data["categories"] = [{**c, "supercategory": ""} for c in data["categories"]]
    for image in data["images"]:
        image |= {"license": 0, "flickr_url": "", "coco_url": "", "date_captured": 0}
    for ann in data["annotations"]:
        ann |= {"segmentation": [], "attributes": {"occluded": False, "rotation": 0.0}}
    _copy_images(images, coco, data, root / "images")
    _write(root / "annotations" / "instances_default.json", data)
    return data


def cvat(images: Path, coco: dict, root: Path) -> Layout:
    _cvat_tree(images, coco, root)
    json_file = root / "annotations" / "instances_default.json"
    return {"image_dir": str(root / "images"), "json_file": str(json_file), "num_classes": 4}


def cvat_zip(images: Path, coco: dict, root: Path) -> Layout:
    tree = root / "export"
    _cvat_tree(images, coco, tree)
    archive = root / "task_1_dataset_coco.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        for path in sorted(tree.rglob("*")):
            if path.is_file():
                zf.write(path, path.relative_to(tree).as_posix())
    json_file = tree / "annotations" / "instances_default.json"
    shutil.rmtree(tree / "images")
    return {"image_dir": str(archive), "json_file": str(json_file), "num_classes": 4}


def _fiftyone(coco: dict) -> dict:
    ids = {c["id"]: i + 1 for i, c in enumerate(sorted(coco["categories"], key=lambda c: c["name"]))}
    data = _remap(coco, ids)
    data["categories"] = sorted(({**c, "supercategory": None} for c in data["categories"]), key=lambda c: c["id"])
    data["info"] = {"year": "", "version": "", "description": "Exported from FiftyOne", "date_created": ""}
    data["licenses"] = []
    for ann in data["annotations"]:
        ann["supercategory"] = None
    return data


def fiftyone(images: Path, coco: dict, root: Path) -> Layout:
    data = _fiftyone(coco)
    _copy_images(images, coco, data, root / "data")
    return {"image_dir": str(root / "data"), "json_file": str(_write(root / "labels.json", data)), "num_classes": 4}


def fiftyone_nested(images: Path, coco: dict, root: Path) -> Layout:
    data = _rename(_fiftyone(coco), lambda n: f"cam{int(n[:6]) % 2}/{n}")
    _copy_images(images, coco, data, root / "data")
    return {"image_dir": str(root / "data"), "json_file": str(_write(root / "labels.json", data)), "num_classes": 4}


def labelstudio(images: Path, coco: dict, root: Path) -> Layout:
    ids = {c["id"]: i for i, c in enumerate(sorted(coco["categories"], key=lambda c: c["id"]))}
    digest = lambda name: hashlib.sha1(name.encode()).hexdigest()[:8]  # noqa: E731 - Label Studio's upload prefix
    data = _rename(_remap(coco, ids), lambda n: f"images/{digest(n)}-{n}")
    data["info"] = {"year": 2024, "version": "1.0", "description": "", "contributor": "Label Studio", "url": ""}
    for image in data["images"]:
        image["file_name"] = image["file_name"].replace("/", "\\") if image["id"] % 2 else image["file_name"]
    _copy_images(images, coco, _rename(data, lambda n: n.replace("\\", "/")), root)
    return {"image_dir": str(root / "images"), "json_file": str(_write(root / "result.json", data)), "num_classes": 4}


LAYOUTS: dict[str, Callable[[Path, dict, Path], Layout]] = {
    "tao_tar": tao_tar,
    "roboflow": roboflow,
    "cvat": cvat,
    "cvat_zip": cvat_zip,
    "fiftyone": fiftyone,
    "fiftyone_nested": fiftyone_nested,
    "labelstudio": labelstudio,
}


def build(name: str, split_dir: Path, root: Path) -> Layout:
    """Layout ``name`` of the synthetic split in ``split_dir`` (``images/`` + ``annotations.json``) under ``root``."""
    coco = json.loads((split_dir / "annotations.json").read_text())
    return LAYOUTS[name](split_dir / "images", coco, root)


@contextmanager
def moto_server() -> Iterator[None]:
    """A real S3 server (moto's server mode) on loopback, with the AWS environment pointing at it while open."""
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    env = {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    saved = {key: os.environ.get(key) for key in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        server.stop()


def upload(layout: Layout, root: Path, bucket: str) -> Layout:
    """``layout`` (written under ``root``) copied to ``s3://bucket/`` and pointing there."""
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket=bucket)
    for path in root.rglob("*"):
        if path.is_file():
            client.upload_file(str(path), bucket, path.relative_to(root).as_posix())
    to_s3 = lambda p: f"s3://{bucket}/{Path(p).relative_to(root).as_posix()}"  # noqa: E731
    return {**layout, "image_dir": to_s3(layout["image_dir"]), "json_file": to_s3(layout["json_file"])}
