"""Data: sources (folders, archives, S3 on a real loopback server), categories, COCO parsing, transforms, loaders."""

from __future__ import annotations

import io
import json
import socket
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from rtdetr_tao.config.dataset import AugmentationSpec, DatasetSpec, DataSource
from rtdetr_tao.data.categories import category_map, category_map_from_sources, model_category_map
from rtdetr_tao.data.coco import CocoDetection
from rtdetr_tao.data.loader import build_eval_loader, build_train_loader
from rtdetr_tao.data.sources import extract, resolve_file, resolve_image_dir
from rtdetr_tao.data.synthetic import write_split
from rtdetr_tao.data.transforms import DenseO2O, TrainTransform
from rtdetr_tao.errors import DataError, SpecError


@pytest.fixture(scope="module")
def shapes(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("shapes")
    folder = write_split(root / "train", 12, size=(96, 96), seed=0)
    archived = write_split(root / "archived", 6, size=(96, 96), seed=1, archive=True)
    return {"folder": folder, "archive": archived, "root": root}


def _spec(split, tmp_path: Path, **extra) -> DatasetSpec:
    source = {"image_dir": str(split.image_dir), "json_file": str(split.json_file)}
    aug = {"train_spatial_size": [64, 64], "eval_spatial_size": [64, 64], "multi_scales": [[64, 64]]}
    data = {"train_data_sources": [source], "val_data_sources": source, "num_classes": 4, "batch_size": 2}
    return DatasetSpec.model_validate(
        data | {"workers": 0, "cache_dir": str(tmp_path / "cache"), "augmentation": aug} | extra
    )


def _loader(spec: DatasetSpec, **kwargs):
    cmap = category_map_from_sources(spec, spec.train_data_sources)
    args = {"num_epochs": 3, "stop_epoch": 2, "seed": 7, "category_map": cmap} | kwargs
    return build_train_loader(spec, **args)


def _batches(loader) -> list[tuple[torch.Tensor, list]]:
    return [(images.clone(), targets) for images, targets in loader]


# --- sources -------------------------------------------------------------------------------------------------------


def test_archive_and_folder_give_the_same_images(shapes, tmp_path) -> None:
    extracted = resolve_image_dir(str(shapes["archive"].image_dir), str(tmp_path))
    assert sorted(p.name for p in extracted.iterdir()) == [f"{i:06d}.jpg" for i in range(1, 7)]
    assert resolve_image_dir(str(shapes["archive"].image_dir), str(tmp_path)) == extracted  # extracted once


def _tar_with(tmp_path: Path, name: str, member: tarfile.TarInfo, data: bytes = b"") -> Path:
    path = tmp_path / name
    with tarfile.open(path, "w:gz") as tar:
        tar.addfile(member, io.BytesIO(data) if data else None)
    return path


@pytest.mark.parametrize(
    ("kind", "message"),
    [("absolute", "absolute path"), ("dotdot", "'..'"), ("symlink", "links outside"), ("device", "device")],
)
def test_malicious_archives_are_rejected(tmp_path, kind, message) -> None:
    member = tarfile.TarInfo({"absolute": "/etc/evil", "dotdot": "a/../../evil"}.get(kind, "evil"))
    if kind == "symlink":
        member.type, member.linkname = tarfile.SYMTYPE, "../../../etc/passwd"
    elif kind == "device":
        member.type = tarfile.CHRTYPE
    else:
        member.size = 4
    archive = _tar_with(tmp_path, f"{kind}.tar.gz", member, b"evil" if member.size else b"")
    with pytest.raises(DataError, match=message):
        extract(archive, str(tmp_path / "cache"))
    assert not list((tmp_path / "cache" / "extracted").glob("[!.]*"))  # nothing left behind as a usable folder


def test_missing_files_and_corrupt_json_are_clear_errors(shapes, tmp_path) -> None:
    with pytest.raises(DataError, match="file not found: /nope.json"):
        resolve_file("/nope.json")
    with pytest.raises(DataError, match="image folder not found"):
        resolve_image_dir(str(tmp_path / "nope"))
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    spec = _spec(shapes["folder"], tmp_path, train_data_sources=[{"image_dir": "x", "json_file": str(bad)}])
    with pytest.raises(DataError, match="bad.json is not a valid COCO annotation file"):
        category_map_from_sources(spec, spec.train_data_sources)


@pytest.fixture
def s3_server(monkeypatch):
    from moto.server import ThreadedMotoServer

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    for key, value in {
        "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }.items():
        monkeypatch.setenv(key, value)
    yield
    server.stop()


def test_s3_tarball_source_trains_and_is_cached(s3_server, shapes, tmp_path) -> None:
    import boto3

    client = boto3.client("s3")
    client.create_bucket(Bucket="data")
    split = shapes["archive"]
    client.upload_file(str(split.image_dir), "data", "train/images.tar.gz")
    client.upload_file(str(split.json_file), "data", "train/annotations.json")
    source = {"image_dir": "s3://data/train/images.tar.gz", "json_file": "s3://data/train/annotations.json"}
    spec = _spec(split, tmp_path, train_data_sources=[source], val_data_sources=source)
    images, targets = next(iter(_loader(spec)))
    assert images.shape == (2, 3, 64, 64) and len(targets) == 2
    cached = tmp_path / "cache" / "s3" / "data" / "train" / "annotations.json"
    first = cached.stat().st_mtime_ns
    resolve_file(source["json_file"], str(tmp_path / "cache"))
    assert cached.stat().st_mtime_ns == first  # same ETag: not downloaded again
    data = json.loads(split.json_file.read_text())
    data["info"] = {"changed": True}
    client.put_object(Bucket="data", Key="train/annotations.json", Body=json.dumps(data).encode())
    resolve_file(source["json_file"], str(tmp_path / "cache"))
    assert json.loads(cached.read_text())["info"] == {"changed": True}
    with pytest.raises(DataError, match="s3://data/missing.json"):
        resolve_file("s3://data/missing.json", str(tmp_path / "cache"))
    # an s3:// prefix of loose images works too
    client.upload_file(str(split.json_file), "data", "loose/a.json")
    assert (resolve_image_dir("s3://data/loose", str(tmp_path / "cache")) / "a.json").is_file()


# --- categories and COCO parsing ------------------------------------------------------------------------------------


def test_num_classes_conventions() -> None:
    cats = {1: "a", 3: "b", 5: "c", 7: "d"}
    contiguous = category_map(cats, 4)
    assert contiguous.label_to_category == (1, 3, 5, 7) and contiguous.category_to_label[5] == 2
    tao = category_map(cats, 8)
    assert tao.label_to_category == tuple(range(8)) and tao.category_names[3] == "b"
    assert tao.category_names[2] == "class_2"
    with pytest.raises(DataError, match=r"num_classes=5 .* use dataset.num_classes=4 .* or 8"):
        category_map(cats, 5)
    seed_004 = category_map({1: "a", 2: "b", 3: "c", 4: "d"}, 5)  # TAO's example: ids 1-4, num_classes 5
    assert seed_004.category_to_label[4] == 4
    assert type(contiguous).from_dict(contiguous.to_dict()) == contiguous


def categories_source(folder: Path, name: str, categories: dict[int, str]) -> dict[str, str]:
    """A COCO source whose file defines ``categories`` (id → name) and no images."""
    path = folder / f"{name}.json"
    listed = [{"id": cid, "name": label} for cid, label in categories.items()]
    path.write_text(json.dumps({"images": [], "annotations": [], "categories": listed}))
    return {"image_dir": str(folder), "json_file": str(path)}


def test_a_models_categories_come_from_its_checkpoint_then_all_training_files_then_test_then_val(tmp_path) -> None:
    train = [categories_source(tmp_path, "a", {3: "x"}), categories_source(tmp_path, "b", {7: "y"})]
    test, val = (
        categories_source(tmp_path, "test", {4: "p", 9: "q"}),
        categories_source(tmp_path, "val", {5: "u", 6: "v"}),
    )

    def spec(**sources) -> DatasetSpec:
        return DatasetSpec.model_validate({"num_classes": 2, "cache_dir": str(tmp_path / "cache"), **sources})

    everything = spec(train_data_sources=train, test_data_sources=test, val_data_sources=val)
    recorded = category_map({1: "r", 2: "s"}, 2)
    assert model_category_map(everything, recorded.to_dict()) == recorded
    assert model_category_map(everything, None).names_by_category == {3: "x", 7: "y"}  # every training file
    assert model_category_map(spec(test_data_sources=test, val_data_sources=val), {}).label_to_category == (4, 9)
    assert model_category_map(spec(val_data_sources=val), None).label_to_category == (5, 6)
    with pytest.raises(SpecError, match="w.pth does not record its classes; give dataset.train_data_sources"):
        model_category_map(spec(), None, model="w.pth")


def _coco_file(tmp_path: Path, annotations: list[dict], width: int = 50, height: int = 40) -> Path:
    images = tmp_path / "imgs"
    images.mkdir(exist_ok=True)
    Image.new("RGB", (width, height), "gray").save(images / "a.jpg")
    Image.new("RGB", (width, height), "gray").save(images / "b.jpg")
    data = {
        "images": [
            {"id": 10, "file_name": "a.jpg", "width": width, "height": height},
            {"id": 11, "file_name": "b.jpg", "width": width, "height": height},
        ],
        "annotations": [{"id": i + 1, "image_id": 10, "iscrowd": 0, "area": 1, **a} for i, a in enumerate(annotations)],
        "categories": [{"id": 3, "name": "x"}, {"id": 9, "name": "y"}],
    }
    path = tmp_path / "ann.json"
    path.write_text(json.dumps(data))
    return path


def test_boxes_cleaned_as_the_reference_and_negatives_kept(tmp_path, caplog) -> None:
    annotations = [
        {"category_id": 3, "bbox": [-5, -5, 20, 20]},  # clipped to [0, 0, 15, 15]
        {"category_id": 9, "bbox": [10, 10, 5, 5], "iscrowd": 1},  # crowd: dropped
        {"category_id": 9, "bbox": [60, 10, 5, 5]},  # outside: empty after clipping
        {"category_id": 9, "bbox": [10, 10, 0, 5]},  # zero width
    ]
    path = _coco_file(tmp_path, annotations)
    cmap = category_map({3: "x", 9: "y"}, 2)
    source = DataSource(image_dir=str(tmp_path / "imgs"), json_file=str(path))
    dataset = CocoDetection(source, cmap, eval_size=(40, 50))
    assert len(dataset) == 2  # the image without boxes stays
    _, target, _ = dataset[0]
    assert target["labels"].tolist() == [0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[7.5 / 50, 7.5 / 40, 15 / 50, 15 / 40]]))
    assert dataset[1][1]["boxes"].shape == (0, 4)
    assert "1 crowd" in caplog.text and "2 empty after clipping" in caplog.text
    bad = _coco_file(tmp_path, [{"category_id": 4, "bbox": [1, 1, 5, 5]}])
    with pytest.raises(DataError, match="category_id 4"):
        CocoDetection(DataSource(image_dir=str(tmp_path / "imgs"), json_file=str(bad)), cmap)


def test_missing_or_corrupt_images_fail_or_are_skipped(tmp_path) -> None:
    path = _coco_file(tmp_path, [{"category_id": 3, "bbox": [1, 1, 5, 5]}])
    (tmp_path / "imgs" / "a.jpg").write_bytes(b"not an image")
    source = DataSource(image_dir=str(tmp_path / "imgs"), json_file=str(path))
    cmap = category_map({3: "x", 9: "y"}, 2)
    with pytest.raises(DataError, match=r"a\.jpg.*skip_corrupt_images"):
        CocoDetection(source, cmap)[0]
    assert CocoDetection(source, cmap, skip_corrupt=True)[0] is None


# --- transforms ------------------------------------------------------------------------------------------------------


@settings(max_examples=25, deadline=None)
@given(
    boxes=st.lists(
        st.tuples(st.floats(0, 90), st.floats(0, 70), st.floats(2, 60), st.floats(2, 50)), min_size=0, max_size=5
    ),
    seed=st.integers(0, 1000),
    strong=st.booleans(),
)
def test_train_transforms_keep_boxes_valid(boxes, seed, strong) -> None:
    aug = AugmentationSpec.model_validate(
        {"train_spatial_size": [64, 96], "distortion_prob": 1.0, "iou_crop_prob": 1.0}
    )
    image = Image.new("RGB", (100, 80), "white")
    xyxy = torch.tensor([[x, y, min(x + w, 100), min(y + h, 80)] for x, y, w, h in boxes]).reshape(-1, 4)
    torch.manual_seed(seed)
    tensor, out, labels = TrainTransform(aug)(image, xyxy, torch.arange(len(xyxy)), strong=strong)
    assert tensor.shape == (3, 64, 96) and tensor.dtype == torch.float32 and 0 <= tensor.min() <= tensor.max() <= 1
    assert len(out) == len(labels) <= len(xyxy)
    assert bool(((out >= 0) & (out <= 1)).all()) and bool((out[:, 2:] > 0).all())
    assert bool((out[:, :2] - out[:, 2:] / 2 >= -1e-6).all() and (out[:, :2] + out[:, 2:] / 2 <= 1 + 1e-6).all())


def test_strong_augmentation_stops_at_stop_epoch(shapes, tmp_path) -> None:
    spec = _spec(shapes["folder"], tmp_path, augmentation={
        "train_spatial_size": [64, 64], "distortion_prob": 1.0, "zoom_out_prob": 1.0, "hflip_prob": 0.0,
        "multi_scales": [],
    })  # fmt: skip
    loader = _loader(spec, stop_epoch=1)
    cmap = category_map_from_sources(spec, spec.train_data_sources)
    plain = CocoDetection(spec.val_data_sources, cmap, eval_size=(64, 64))
    loader.set_epoch(1)  # no strong ops: a stretched resize, as evaluation does (up to resampling details)
    images, targets = next(iter(loader))
    reference = torch.stack(
        [plain[plain.records.index(next(r for r in plain.records if r.image_id == t["image_id"]))][0] for t in targets]
    )
    assert (images - reference).abs().mean() < 0.02
    loader.set_epoch(0)
    images, _ = next(iter(loader))
    assert (images - reference).abs().mean() > 0.05  # distorted and zoomed out


# --- loaders ---------------------------------------------------------------------------------------------------------


def test_resume_mid_epoch_sees_the_same_batches(shapes, tmp_path) -> None:
    loader = _loader(_spec(shapes["folder"], tmp_path))
    loader.set_epoch(1)
    full = _batches(loader)
    assert len(full) == len(loader) == 6
    loader.set_epoch(1, start_batch=4)
    tail = _batches(loader)
    assert len(tail) == 2
    for (a, ta), (b, tb) in zip(full[4:], tail, strict=True):
        assert torch.equal(a, b) and [t["image_id"] for t in ta] == [t["image_id"] for t in tb]
        assert all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(ta, tb, strict=True))
    loader.set_epoch(2)
    assert [t["image_id"] for _, ts in _batches(loader) for t in ts] != [t["image_id"] for _, ts in full for t in ts]


def test_workers_do_not_change_the_data(shapes, tmp_path) -> None:
    spec = _spec(shapes["folder"], tmp_path)
    loader = _loader(spec)
    loader.set_epoch(0)
    serial = _batches(loader)
    parallel_loader = _loader(spec.model_copy(update={"workers": 2}))
    parallel_loader.set_epoch(0)
    for (a, _), (b, _) in zip(serial, _batches(parallel_loader), strict=True):
        assert torch.equal(a, b)


def test_dense_o2o_is_a_function_of_seed_epoch_and_batch(shapes, tmp_path) -> None:
    """Mosaic (partners and affine) and mixup draw from the sample's and batch's own generators: the same data
    with workers, and from a mid-epoch start, as a resumed run needs; and they do add boxes."""
    spec = _spec(shapes["folder"], tmp_path)
    plain = _loader(spec)
    plain.set_epoch(0)
    boxes_plain = sum(len(t["boxes"]) for _, ts in _batches(plain) for t in ts)
    dense = DenseO2O(mosaic_prob=1.0, mosaic_epochs=(0, 2), mixup_prob=1.0, mixup_epochs=(0, 2))
    loader = _loader(spec, dense_o2o=dense)
    loader.set_epoch(0)
    serial = _batches(loader)
    assert sum(len(t["boxes"]) for _, ts in serial for t in ts) > 4 * boxes_plain  # 4 tiles, then 2 images mixed
    parallel = _loader(spec.model_copy(update={"workers": 2}), dense_o2o=dense)
    parallel.set_epoch(0, start_batch=3)
    for (a, ta), (b, tb) in zip(serial[3:], _batches(parallel), strict=True):
        assert torch.equal(a, b) and all(torch.equal(x["boxes"], y["boxes"]) for x, y in zip(ta, tb, strict=True))
    loader.set_epoch(2)  # outside the windows: the plain recipe's data
    plain.set_epoch(2)
    assert all(torch.equal(a, b) for (a, _), (b, _) in zip(_batches(loader), _batches(plain), strict=True))


def test_ranks_partition_the_data(shapes, tmp_path) -> None:
    spec = _spec(shapes["folder"], tmp_path)
    seen = []
    for rank in range(2):
        loader = _loader(spec, world_size=2, rank=rank)
        loader.set_epoch(0)
        seen.append([t["image_id"] for _, ts in _batches(loader) for t in ts])
    assert len(seen[0]) == len(seen[1]) == 6 and not set(seen[0]) & set(seen[1])
    cmap = category_map_from_sources(spec, spec.train_data_sources)
    ids = []
    for rank in range(2):  # evaluation: every image exactly once over the ranks
        loader, coco = build_eval_loader(spec, "val", category_map=cmap, world_size=2, rank=rank)
        ids += [t["image_id"] for _, ts in loader for t in ts]
    assert sorted(ids) == sorted(coco.getImgIds())


def test_letterbox_eval_boxes_map_back(shapes, tmp_path) -> None:
    path = _coco_file(tmp_path, [{"category_id": 3, "bbox": [10, 4, 20, 30]}], width=80, height=40)
    cmap = category_map({3: "x", 9: "y"}, 2)
    source = DataSource(image_dir=str(tmp_path / "imgs"), json_file=str(path))
    image, target, _ = CocoDetection(source, cmap, eval_size=(64, 64), preserve_aspect_ratio=True)[0]
    letterbox = target["letterbox"]
    assert letterbox.resized_size == (64, 32) and image[:, 40:, :].abs().max() == 0  # padding below
    cx, cy, w, h = target["boxes"][0].tolist()
    scale = np.array([64 * 80 / 64, 64 * 40 / 32])  # canvas → original pixels
    np.testing.assert_allclose([(cx - w / 2) * scale[0], (cy - h / 2) * scale[1]], [10, 4], atol=1e-4)
