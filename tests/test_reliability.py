"""Bad input never wins (issue 14): S3 keys, spec bombs, image decoding, COCO validation, crashes as one line."""

from __future__ import annotations

import json
import logging
import uuid
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_data import s3_server  # noqa: F401  (a real moto server on loopback)

from rtdetr_tao.data.preprocess import load_rgb
from rtdetr_tao.data.sources import resolve_image_dir
from rtdetr_tao.errors import DataError

# --- S3 -------------------------------------------------------------------------------------------------------------


def _bucket(objects: dict[str, bytes]) -> tuple[object, str]:
    """A new bucket (moto's state outlives its server) holding ``objects``: (client, bucket name)."""
    import boto3

    client, bucket = boto3.client("s3"), f"b{uuid.uuid4().hex[:16]}"
    client.create_bucket(Bucket=bucket)
    for key, body in objects.items():
        client.put_object(Bucket=bucket, Key=key, Body=body)
    return client, bucket


@pytest.mark.parametrize(
    ("key", "problem"),
    [
        ("imgs/../../../../../../../../../../../../tmp/{tag}/X.txt", "'..' segment"),
        ("imgs/sub/../a.jpg", "'..' segment"),  # would normalise onto imgs/a.jpg
        ("imgs/./a.jpg", "'.' or '..' segment"),
        ("imgs//a.jpg", "empty"),
        ("imgs/..\\..\\evil.txt", "backslash"),
    ],
)
def test_s3_keys_that_leave_the_cache_or_alias_another_key_are_refused(
    s3_server,  # noqa: F811
    tmp_path,
    key,
    problem,
) -> None:
    key = key.format(tag=tmp_path.name)
    _, bucket = _bucket({"imgs/a.jpg": b"a", key: b"evil"})
    cache = tmp_path / "cache"
    with pytest.raises(DataError, match=problem) as error:
        resolve_image_dir(f"s3://{bucket}/imgs", str(cache))
    assert repr(key) in str(error.value) and "\n" not in str(error.value)
    assert not Path(f"/tmp/{tmp_path.name}").exists()
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert not written  # keys are checked before anything is downloaded


def test_s3_absolute_key_is_refused(tmp_path) -> None:
    from rtdetr_tao.data.sources import download

    with pytest.raises(DataError, match="is absolute"):
        download("s3://bucket//etc/passwd", str(tmp_path))  # refused before any request


def test_s3_key_that_is_another_keys_folder_is_refused(s3_server, tmp_path) -> None:  # noqa: F811
    _, bucket = _bucket({"imgs/a": b"a", "imgs/a/b.jpg": b"b"})
    with pytest.raises(DataError, match="'imgs/a' is both an object and the folder"):
        resolve_image_dir(f"s3://{bucket}/imgs", str(tmp_path))


def test_s3_prefix_cache_mirrors_the_listing(s3_server, tmp_path) -> None:  # noqa: F811
    client, bucket = _bucket({f"imgs/{i}.jpg": bytes([i]) for i in range(8)} | {"imgs/sub/x.jpg": b"x"})
    folder = resolve_image_dir(f"s3://{bucket}/imgs", str(tmp_path))
    assert len([p for p in folder.rglob("*") if p.is_file()]) == 9
    for key in ("imgs/0.jpg", "imgs/1.jpg", "imgs/sub/x.jpg"):
        client.delete_object(Bucket=bucket, Key=key)
    client.put_object(Bucket=bucket, Key="imgs/2.jpg", Body=b"changed")
    client.put_object(Bucket=bucket, Key="imgs/0.jpg/now_a_folder.jpg", Body=b"f")  # where a stale file stands
    assert resolve_image_dir(f"s3://{bucket}/imgs", str(tmp_path)) == folder
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert files == ["0.jpg/now_a_folder.jpg"] + [f"{i}.jpg" for i in range(2, 8)]
    assert not (folder / "sub").exists()
    assert (folder / "2.jpg").read_bytes() == b"changed"


# --- spec bombs -----------------------------------------------------------------------------------------------------


def _laughs(levels: int) -> str:
    lines = ['l0: &l0 "lol"']
    lines += [f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]" for i in range(1, levels + 1)]
    return "\n".join(lines) + f"\ntrain:\n  callbacks: *l{levels}\n"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (_laughs(9), "expands to more than 100000 values"),
        ('a: "' + "x" * 1000 + '"\nb: "' + "${a}" * 100 + '"\nmodel:\n  backbone: "${b}${b}"\n', "longer than 65536"),
        ("\n".join(f"k{i}: ${{k{i + 1}}}" for i in range(40)) + "\nk40: 1\ntrain:\n  num_epochs: ${k0}\n", "nest more"),
        ("train: " + "[" * 200 + "]" * 200 + "\n", "nest"),
        ("a: " + "{b: " * 100 + "1" + "}" * 100 + "\n", "nest more than 64 deep"),
    ],
    ids=["billion-laughs", "interpolation-size", "reference-depth", "deep-flow", "deep-mapping"],
)
def test_spec_bombs_are_refused_quickly_in_one_line(tmp_path, text, message) -> None:
    import time

    from rtdetr_tao.config.loader import load_spec
    from rtdetr_tao.errors import SpecError

    spec = tmp_path / "bomb.yaml"
    spec.write_text(text)
    start = time.perf_counter()
    with pytest.raises(SpecError, match=message) as error:
        load_spec(spec)
    assert time.perf_counter() - start < 5 and "\n" not in str(error.value)


def test_spec_file_size_is_bounded(tmp_path) -> None:
    from rtdetr_tao.config.loader import MAX_SPEC_BYTES, load_spec
    from rtdetr_tao.errors import SpecError

    spec = tmp_path / "big.yaml"
    spec.write_text("# " + "x" * MAX_SPEC_BYTES + "\n")
    with pytest.raises(SpecError, match="a spec may hold at most"):
        load_spec(spec)


# --- images ---------------------------------------------------------------------------------------------------------


def _picture(size: tuple[int, int] = (48, 32)) -> np.ndarray:
    """A uint8 [H, W, 3] picture with a gradient (every grey level distinct enough to compare scalings)."""
    width, height = size
    x = np.linspace(0, 255, width)[None, :, None]
    y = np.linspace(0, 255, height)[:, None, None]
    return np.broadcast_to(np.concatenate([x + 0 * y, y + 0 * x, (x + y) / 2], axis=2), (height, width, 3)).astype(
        np.uint8
    )


def test_high_bit_depth_float_and_palette_images_are_scaled_not_clipped(tmp_path) -> None:
    grey = np.asarray(Image.fromarray(_picture()).convert("L"), dtype=np.float64)
    files = {
        "16bit.png": Image.fromarray((grey * 257).astype(np.uint16)),  # I;16
        "32bit.tif": Image.fromarray((grey * 257).astype(np.int32)),  # I
        "float01.tif": Image.fromarray((grey / 255).astype(np.float32)),  # F in [0, 1]
        "float255.tif": Image.fromarray(grey.astype(np.float32)),  # F in [0, 255]
        "palette.png": Image.fromarray(grey.astype(np.uint8)).convert("P"),
        "grey_alpha.png": Image.fromarray(grey.astype(np.uint8)).convert("LA"),
    }
    for name, image in files.items():
        image.save(tmp_path / name)
        loaded = load_rgb(tmp_path / name)
        assert loaded.mode == "RGB" and loaded.size == (48, 32), name
        pixels = np.asarray(loaded, dtype=np.float64)
        assert np.abs(pixels - grey[..., None]).max() <= 1.0, (name, Image.open(tmp_path / name).mode)


def test_exif_orientation_puts_the_annotated_box_on_the_object(tmp_path) -> None:
    """A phone photo stored sideways with EXIF orientation 6 ("rotate 90° clockwise to display"); Roboflow and CVAT
    annotate the displayed image, so its COCO box must land on the object after loading."""
    from rtdetr_tao.config.dataset import DataSource
    from rtdetr_tao.data.categories import CategoryMap
    from rtdetr_tao.data.coco import CocoDetection

    displayed = np.full((60, 100, 3), 30, np.uint8)  # W 100, H 60
    displayed[10:30, 60:90] = (250, 20, 20)  # the object: x 60-90, y 10-30
    stored = Image.fromarray(displayed).transpose(Image.Transpose.ROTATE_90)  # what the camera wrote
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "images").mkdir()
    stored.save(tmp_path / "images" / "photo.jpg", exif=exif, quality=98)
    assert Image.open(tmp_path / "images" / "photo.jpg").size == (60, 100)
    coco = {
        "images": [{"id": 1, "file_name": "photo.jpg", "width": 100, "height": 60}],
        "annotations": [{"id": 1, "image_id": 1, "category_id": 1, "bbox": [60, 10, 30, 20], "area": 600}],
        "categories": [{"id": 1, "name": "thing"}],
    }
    (tmp_path / "ann.json").write_text(json.dumps(coco))
    source = DataSource(image_dir=str(tmp_path / "images"), json_file=str(tmp_path / "ann.json"))
    data = CocoDetection(source, CategoryMap((1,), ("thing",)), eval_size=(60, 100))
    image, target, _ = data[0]
    cx, cy, w, h = (target["boxes"][0] * torch.tensor([100, 60, 100, 60])).tolist()
    inside = image[:, int(cy - h / 2) + 2 : int(cy + h / 2) - 2, int(cx - w / 2) + 2 : int(cx + w / 2) - 2]
    assert inside[0].mean() > 0.9 and inside[1].mean() < 0.2  # red: the object is under its box


def test_decompression_bomb_is_a_one_line_data_error_or_a_skip(tmp_path, caplog, monkeypatch) -> None:
    from rtdetr_tao.data import preprocess
    from rtdetr_tao.data.preprocess import MAX_IMAGE_PIXELS

    bomb = tmp_path / "bomb.png"
    Image.new("1", (15000, 13000)).save(bomb)  # 195 megapixels in a few kB
    assert MAX_IMAGE_PIXELS < 15000 * 13000
    with pytest.raises(DataError, match=r"bomb.png has more than the limit of 100000000 pixels") as error:
        load_rgb(bomb)
    assert "\n" not in str(error.value)
    small = tmp_path / "ok.png"
    Image.fromarray(_picture()).save(small)
    monkeypatch.setattr(preprocess, "MAX_IMAGE_PIXELS", 48 * 32 - 1)  # below PIL's own limit, ours decides
    with pytest.raises(DataError, match=r"ok.png is 48x32 = 1536 pixels, more than the limit of 1535 pixels"):
        load_rgb(small)
    monkeypatch.undo()
    from rtdetr_tao.config.dataset import InferSource
    from rtdetr_tao.data.loader import build_infer_loader

    loader = build_infer_loader(
        InferSource(image_dir=[str(tmp_path)]), input_size=(32, 32), preserve_aspect_ratio=False, batch_size=2,
        workers=0, cache_dir=str(tmp_path / "cache"),
    )  # fmt: skip
    with caplog.at_level("WARNING"):
        paths = [meta["path"].name for _, metas in loader for meta in metas]
    assert paths == ["ok.png"] and "bomb.png" in caplog.text


# --- COCO files -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def split16(tmp_path_factory):
    from rtdetr_tao.data.synthetic import write_split

    return write_split(tmp_path_factory.mktemp("coco") / "train", 16, size=(64, 48), seed=3)


def _dataset(split, tmp_path: Path, mutate, **kwargs):
    from rtdetr_tao.config.dataset import DataSource
    from rtdetr_tao.data.categories import CategoryMap
    from rtdetr_tao.data.coco import CocoDetection

    data = json.loads(split.json_file.read_text())
    mutate(data)
    path = tmp_path / "annotations.json"
    path.write_text(json.dumps(data))
    source = DataSource(image_dir=str(split.image_dir), json_file=str(path))
    return CocoDetection(source, CategoryMap((1, 3, 5, 7), ("a", "b", "c", "d")), eval_size=(48, 64), **kwargs)


def _set(path: str, value):
    def mutate(data: dict) -> None:
        section, index, key = path.split(".")
        if value is KeyError:
            del data[section][int(index)][key]
        else:
            data[section][int(index)][key] = value

    return mutate


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (_set("images.5.id", 1), r"image id 1 is used twice, by 000001.jpg and 000006.jpg"),
        (_set("annotations.7.id", 1), r"annotation id 1 is used twice, in 000001.jpg and 0000\d\d.jpg"),
        (_set("annotations.2.bbox", KeyError), r"annotation 3 \(image \d+\) has no 'bbox'"),
        (_set("annotations.2.bbox", [1, 2]), r"annotation 3 \(image \d+\) has bbox \[1, 2\]; it must be four finite"),
        (_set("annotations.2.bbox", [1, 2, "NaN", 4]), r"has bbox \[1, 2, 'NaN', 4\]"),
        (_set("annotations.2.bbox", [1, 2, float("nan"), 4]), r"has bbox \[1, 2, nan, 4\]"),
        (_set("images.3.width", None), r"image 4 \(000004.jpg\) has no positive width and height"),
    ],
    ids=["dup-image", "dup-annotation", "no-bbox", "bbox-2", "bbox-NaN-string", "bbox-NaN", "no-width"],
)
def test_malformed_coco_files_are_one_line_errors(split16, tmp_path, mutate, message) -> None:
    with pytest.raises(DataError, match=message) as error:
        _dataset(split16, tmp_path, mutate)
    assert "\n" not in str(error.value) and "annotations.json" in str(error.value)


def test_json_size_that_disagrees_with_the_file_is_an_error(split16, tmp_path) -> None:
    data = _dataset(split16, tmp_path, _set("images.2.width", 128))
    assert data[1][1]["image_id"] == 2  # the others load
    with pytest.raises(DataError, match=r"000003.jpg is 64x48 .* says 128x48"):
        data[2]


# --- crashes that become one-line errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty"])
def test_damaged_archives_are_one_line_errors(tmp_path, damage) -> None:
    import io
    import tarfile

    from rtdetr_tao.data.sources import extract

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        payload = np.random.default_rng(0).bytes(20000)
        member = tarfile.TarInfo("images/a.jpg")
        member.size = len(payload)
        tar.addfile(member, io.BytesIO(payload))
    whole = buffer.getvalue()
    archive = tmp_path / "images.tar.gz"
    archive.write_bytes(
        {"truncated": whole[: len(whole) // 2], "garbage": b"<html>404</html>" * 50, "empty": b""}[damage]
    )
    with pytest.raises(DataError, match=r"cannot read archive .*images.tar.gz: .*download or create it again") as error:
        extract(archive, str(tmp_path / "cache"))
    assert "\n" not in str(error.value)
    assert not list((tmp_path / "cache" / "extracted").iterdir())


# --- a trained model: sizes, resume, weights files, results_dir, output names ---------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """A tiny model trained for one epoch at 64 x 64 (its eval_spatial_size), and its spec."""
    import yaml
    from test_train import TINY_MODEL

    from rtdetr_tao.cli import main
    from rtdetr_tao.data.synthetic import write_split

    root = tmp_path_factory.mktemp("trained")
    split = write_split(root / "train", 8, size=(64, 64), seed=0)
    source = {"image_dir": str(split.image_dir), "json_file": str(split.json_file)}
    spec = {
        "results_dir": str(root / "results"),
        "model": TINY_MODEL,
        "dataset": {
            "train_data_sources": [source], "num_classes": 4, "batch_size": 4, "workers": 0,
            "cache_dir": str(root / "cache"),
            "augmentation": {"train_spatial_size": [64, 64], "eval_spatial_size": [64, 64], "multi_scales": []},
        },
        "train": {"num_epochs": 1, "device": "cpu", "seed": 0, "validation_interval": 1},
    }  # fmt: skip
    path = root / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    root_logger = logging.getLogger()
    level = root_logger.level
    root_logger.setLevel(logging.INFO)  # log.txt gets the INFO messages the epoch-numbering test reads
    try:
        assert main(["train", "-e", str(path)]) == 0
    finally:
        root_logger.setLevel(level)
    ckpt = next((root / "results" / "train").glob("model_epoch_*.pth"))
    return {"spec": path, "root": root, "ckpt": ckpt, "split": split}


def _cli(capsys, *argv: str) -> tuple[int, str]:
    from rtdetr_tao.cli import main

    code = main(list(argv))
    return code, capsys.readouterr().err.strip()


def test_predictor_export_and_inference_default_to_the_trained_size(trained, tmp_path, caplog, capsys) -> None:
    import yaml

    from rtdetr_tao.metadata import read_metadata
    from rtdetr_tao.predictor import Predictor

    with caplog.at_level("WARNING"):
        assert Predictor.from_checkpoint(trained["ckpt"]).input_size == (64, 64)
        assert "was trained at" not in caplog.text
        assert Predictor.from_checkpoint(trained["ckpt"], input_size=(96, 96)).input_size == (96, 96)
        assert "was trained at 64x64 (HxW) but input_size is 96x96" in caplog.text
    caplog.clear()
    bare = tmp_path / "bare.yaml"  # no sizes anywhere: everything comes from the checkpoint
    bare.write_text(
        yaml.safe_dump(
            {
                "results_dir": str(tmp_path / "r"),
                "inference": {"checkpoint": str(trained["ckpt"])},
                "dataset": {"workers": 0},
            }
        )
    )
    onnx_file = tmp_path / "m.onnx"
    base = ["export", "-e", str(bare), f"export.checkpoint={trained['ckpt']}", f"export.onnx_file={onnx_file}"]
    with caplog.at_level("WARNING"):
        assert _cli(capsys, *base)[0] == 0
    assert read_metadata(onnx_file).input_size == (64, 64) and "was trained at" not in caplog.text
    with caplog.at_level("WARNING"):
        assert _cli(capsys, *base, "export.input_height=96", "export.input_width=96")[0] == 0
    assert read_metadata(onnx_file).input_size == (96, 96)
    assert "but export.input_height/input_width is 96x96" in caplog.text
    status = (tmp_path / "r" / "export" / "status.json").read_text().splitlines()[-1]
    assert "at the export size vs" in status and "at the trained size" in status
    caplog.clear()
    images = f"dataset.infer_data_sources.image_dir=[{trained['split'].image_dir}]"
    with caplog.at_level("WARNING"):
        assert _cli(capsys, "inference", "-e", str(bare), images)[0] == 0
        assert "was trained at" not in caplog.text
        assert _cli(capsys, "inference", "-e", str(bare), images, "inference.input_height=96")[0] == 0
        assert "was trained at 64x64" in caplog.text


def test_sixteen_bit_copy_gives_the_same_detections(trained, tmp_path) -> None:
    from rtdetr_tao.predictor import Predictor

    predictor = Predictor.from_checkpoint(trained["ckpt"])
    grey = Image.open(next(trained["split"].image_dir.glob("*.jpg"))).convert("L")
    grey.save(tmp_path / "8.png")
    Image.fromarray(np.asarray(grey).astype(np.uint16) * 257).save(tmp_path / "16.png")
    assert Image.open(tmp_path / "16.png").mode == "I;16"
    eight, sixteen, white = predictor.predict_raw(
        [tmp_path / "8.png", tmp_path / "16.png", Image.new("L", grey.size, 255)]
    )
    assert np.abs(white.boxes - eight.boxes).max() > 0.1  # the model does look at the pixels (clipping shows)
    np.testing.assert_allclose(sixteen.boxes, eight.boxes, atol=1e-3)
    np.testing.assert_allclose(sixteen.scores, eight.scores, atol=1e-5)
    from_pil = predictor.predict_raw([Image.open(tmp_path / "16.png")])[0]
    np.testing.assert_allclose(from_pil.boxes, eight.boxes, atol=1e-3)


def test_inference_outputs_keep_relative_paths(trained, tmp_path, capsys) -> None:
    import yaml

    folder = tmp_path / "images"
    first = sorted(trained["split"].image_dir.glob("*.jpg"))
    for rel, src in (("s1/x.jpg", first[0]), ("s2/x.jpg", first[1]), ("s1/x.png", first[2])):
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.open(src).save(folder / rel)
    spec = tmp_path / "spec.yaml"
    spec.write_text(yaml.safe_dump({
        "results_dir": str(tmp_path / "r"),
        "inference": {"checkpoint": str(trained["ckpt"]), "conf_threshold": 0.0},
        "dataset": {"infer_data_sources": {"image_dir": [str(folder)]}, "workers": 0},
    }))  # fmt: skip
    assert _cli(capsys, "inference", "-e", str(spec))[0] == 0
    out = tmp_path / "r" / "inference"
    annotated = sorted(p.relative_to(out / "images_annotated").as_posix() for p in out.rglob("*.jpg"))
    assert annotated == ["s1/x.jpg", "s1/x_png.jpg", "s2/x.jpg"]
    labels = sorted(p.relative_to(out / "labels").as_posix() for p in (out / "labels").rglob("*.txt"))
    assert labels == ["s1/x.txt", "s1/x_png.txt", "s2/x.txt"]
    results = json.loads((out / "results.json").read_text())
    assert {r["file_name"] for r in results} == {"s1/x.jpg", "s1/x.png", "s2/x.jpg"}
    by_id = {r["image_id"]: r["file_name"] for r in results}
    assert len(set(by_id.values())) == len(by_id) == 3


def test_refused_resume_leaves_the_old_run_untouched(trained, capsys) -> None:
    run = trained["root"] / "results" / "train"
    before = {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()}
    code, err = _cli(capsys, "train", "-e", str(trained["spec"]), "model.num_queries=30", "model.num_select=30")
    assert code == 2 and "cannot resume from" in err and "model.num_queries" in err
    assert {p.name: p.read_bytes() for p in run.iterdir() if p.is_file()} == before


@pytest.mark.parametrize("damage", ["empty", "truncated"])
def test_damaged_weights_file_is_one_line_with_the_right_advice(trained, tmp_path, capsys, damage) -> None:
    whole = trained["ckpt"].read_bytes()
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"" if damage == "empty" else whole[: len(whole) // 3])
    code, err = _cli(capsys, "inference", "-e", str(trained["spec"]), f"inference.checkpoint={bad}",
                     f"dataset.infer_data_sources.image_dir=[{trained['split'].image_dir}]")  # fmt: skip
    assert code == 2 and "\n" not in err and "bad.pth" in err and "copy or download it again" in err
    assert ("is empty (0 bytes)" in err) == (damage == "empty") and "Re-save" not in err


def test_results_dir_that_is_a_file_is_one_line(trained, tmp_path, capsys) -> None:
    blocker = tmp_path / "results"
    blocker.write_text("not a folder")
    code, err = _cli(capsys, "train", "-e", str(trained["spec"]), f"results_dir={blocker}")
    assert code == 2 and "\n" not in err and f"{blocker} is a file, not a folder" in err


def test_pretrained_weights_of_another_architecture_warn_or_fail_with_strict_load(trained, tmp_path, capsys, caplog):
    from test_train import TINY_MODEL

    from rtdetr_tao.config.model import ModelSpec
    from rtdetr_tao.model.build import build_model

    wider = {"backbone": "resnet_50", "hidden_dim": 64, "enc_hidden_dim": 64, "feat_channels": [64, 64, 64]}
    other = build_model(ModelSpec.model_validate(TINY_MODEL | wider), 4)
    weights = tmp_path / "other.pth"
    torch.save(other.state_dict(), weights)
    args = [
        "train",
        "-e",
        str(trained["spec"]),
        f"results_dir={tmp_path / 'r'}",
        f"train.pretrained_model_path={weights}",
    ]
    code, err = _cli(capsys, *args, "train.strict_load=true")
    assert code == 2 and "\n" not in err and "seems to be another architecture" in err and "backbone tensors" in err
    assert not (tmp_path / "r" / "train" / "model_epoch_000.pth").exists()
    with caplog.at_level("WARNING"):
        assert _cli(capsys, *args, "train.num_epochs=1")[0] == 0
    assert "seems to be another architecture" in caplog.text and "train.strict_load=true" in caplog.text


def test_epoch_numbering_is_one_convention(trained) -> None:
    """Messages count epochs from 1 of N (as the progress output); files and status.json fields keep TAO's 0-based
    index, and a message about a checkpoint names its file."""
    run = trained["root"] / "results" / "train"
    text = (run / "log.txt").read_text()
    assert "epoch 1/1: saved checkpoint" in text and "model_epoch_000.pth" in text
    assert "epoch 0" not in text.replace("model_epoch_0", "")
    records = [json.loads(line) for line in (run / "status.json").read_text().splitlines()]
    epoch_records = [r for r in records if r.get("epoch") is not None]
    assert [(r["epoch"], r["message"]) for r in epoch_records] == [(0, "Epoch 1/1 finished.")]


# --- quick start: interrupted and resumed = uninterrupted, bit for bit ----------------------------------------------


@pytest.mark.slow
def test_quickstart_like_run_interrupted_by_sigint_and_resumed_is_bit_exact(tmp_path, repo_root) -> None:
    """The quick-start spec (model, augmentation, multi-scale, EMA, validation, best model, LR steps), scaled down to
    minutes: stopped with SIGINT in epoch 4, resumed, and compared with an uninterrupted run."""
    import signal
    import subprocess
    import sys
    import time

    from rtdetr_tao.data.synthetic import write_split

    data = tmp_path / "data" / "shapes"
    write_split(data / "train", 48, size=(160, 160), seed=0)
    write_split(data / "val", 12, size=(160, 160), seed=1)
    overrides = [
        "train.num_epochs=6", "train.checkpoint_interval=2", "train.validation_interval=2", "train.optim.lr_steps=[4]",
        "train.optim.warmup_steps=10", "train.ema.warmup_steps=20", "train.enable_ema=true", "train.device=cpu",
    ]  # fmt: skip

    def train(name: str) -> subprocess.Popen:
        args = ["train", "-e", str(repo_root / "spec_templates" / "quickstart.yaml"), f"results_dir={tmp_path / name}"]
        return subprocess.Popen(
            [sys.executable, "-m", "rtdetr_tao.cli", *args, *overrides], cwd=tmp_path, stderr=subprocess.PIPE, text=True
        )

    assert train("full").wait(timeout=1800) == 0
    out = tmp_path / "interrupted" / "train"
    process = train("interrupted")
    deadline = time.time() + 1800
    while not (out / "model_epoch_003.pth").exists():
        assert process.poll() is None and time.time() < deadline, "training ended before it could be interrupted"
        time.sleep(0.05)
    time.sleep(1.0)  # into epoch 4 (0-based), which the resumed run redoes
    process.send_signal(signal.SIGINT)
    assert process.wait(timeout=600) == 130
    assert not (out / "model_epoch_005.pth").exists()
    resumed = train("interrupted")
    assert resumed.wait(timeout=1800) == 0, resumed.stderr.read()
    assert "resuming from" in (out / "log.txt").read_text()

    full = tmp_path / "full" / "train"
    for name in ("model_epoch_005.pth", "model_epoch_005-EMA.pth", "model_best.pth"):
        a, b = (torch.load(d / name, weights_only=True)["model"] for d in (full, out))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name

    def kpis(run: Path) -> list:
        return [r["kpi"] for r in map(json.loads, (run / "status.json").read_text().splitlines()) if r.get("kpi")]

    assert kpis(full)[-1] == kpis(out)[-1] and "val_mAP" in kpis(full)[-1]


def test_predictor_raises_our_error_for_too_large_or_unreadable_images(trained, tmp_path, monkeypatch) -> None:
    from rtdetr_tao.data import preprocess
    from rtdetr_tao.predictor import Predictor

    predictor = Predictor.from_checkpoint(trained["ckpt"])
    image = next(trained["split"].image_dir.glob("*.jpg"))
    monkeypatch.setattr(preprocess, "MAX_IMAGE_PIXELS", 100)
    with pytest.raises(DataError, match="more than the limit of 100 pixels"):
        predictor.predict(image)
    monkeypatch.undo()
    (tmp_path / "broken.jpg").write_bytes(image.read_bytes()[:200])
    with pytest.raises(DataError, match="broken.jpg"):
        predictor.predict(tmp_path / "broken.jpg")


def test_pil_warnings_about_damaged_metadata_become_one_log_line(tmp_path, caplog, recwarn) -> None:
    import io

    buffer = io.BytesIO()
    Image.fromarray(_picture()).save(buffer, format="TIFF")
    blob = bytearray(buffer.getvalue())
    blob[15] = 0xFF  # the first tag's count now points past the end of the file: PIL warns and skips it
    path = tmp_path / "meta.tif"
    path.write_bytes(bytes(blob))
    with caplog.at_level("WARNING"):
        try:
            load_rgb(path)
        except DataError as error:
            assert "meta.tif" in str(error)
    assert not [w for w in recwarn if issubclass(w.category, UserWarning)]
    assert "meta.tif: Tag data larger than file" in caplog.text
