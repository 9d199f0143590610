"""Bad input never wins (issue 14): S3 keys, spec bombs, image decoding, COCO validation, crashes as one line."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest
from test_data import s3_server  # noqa: F401  (a real moto server on loopback)

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
    s3_server, tmp_path, key, problem  # noqa: F811
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
    assert resolve_image_dir(f"s3://{bucket}/imgs", str(tmp_path)) == folder
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == [f"{i}.jpg" for i in range(2, 8)]
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
