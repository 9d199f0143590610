"""Named pretrained weights: downloads from a loopback HTTP server started here (cache hit, checksum mismatch,
truncated transfer then resume, server down, unknown names), ``rtdetr weights list``, and catalog names in the
weights keys. Nothing reaches the internet."""

from __future__ import annotations

import hashlib
import http.server
import io
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from rtdetr_tao import catalog
from rtdetr_tao.catalog import CATALOG, WeightsEntry, resolve_weights
from rtdetr_tao.cli import main
from rtdetr_tao.errors import CheckpointError
from rtdetr_tao.model.build import build_model
from rtdetr_tao.model.weights import load_weights

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB


class _Server(http.server.ThreadingHTTPServer):
    """Serves ``files`` with Range support; records every request; ``truncate_next`` cuts one response short."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []
        self.truncate_next = False

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        rng = self.headers.get("Range")
        self.server.requests.append((self.path, rng))
        data = self.server.files.get(self.path)
        if data is None:
            self.send_error(404)
            return
        start = int(rng.removeprefix("bytes=").split("-")[0]) if rng else 0
        self.send_response(206 if rng else 200)
        if rng:
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if self.server.truncate_next:
            self.server.truncate_next = False
            body = body[: len(body) // 3]
            self.close_connection = True
        self.wfile.write(body)


@pytest.fixture
def server(tmp_path, monkeypatch) -> Iterator[_Server]:
    monkeypatch.setenv("RTDETR_CACHE", str(tmp_path / "cache"))
    srv = _Server()
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _entry(server: _Server, name: str, data: bytes, sha256: str | None = "auto") -> WeightsEntry:
    server.files[f"/{name}"] = data
    digest = hashlib.sha256(data).hexdigest() if sha256 == "auto" else sha256
    return WeightsEntry(f"{server.base}/{name}", {"preset": "s"}, "test file", sha256=digest)


def test_download_then_cache_hit_without_a_request(server, tmp_path) -> None:
    entries = {"tiny_coco": _entry(server, "tiny.pth", PAYLOAD)}
    path = Path(resolve_weights("tiny_coco", catalog=entries, progress=False))
    assert path == tmp_path / "cache" / "tiny.pth" and path.read_bytes() == PAYLOAD
    assert not list(path.parent.glob("*.part"))
    assert resolve_weights("tiny_coco", catalog=entries) == str(path)
    assert len(server.requests) == 1  # the second call made no request


def test_checksum_mismatch_deletes_the_file_and_is_one_line(server, tmp_path) -> None:
    entries = {"bad": _entry(server, "bad.pth", PAYLOAD, sha256="0" * 64)}
    with pytest.raises(CheckpointError) as err:
        resolve_weights("bad", catalog=entries, progress=False)
    assert "sha256" in str(err.value) and "\n" not in str(err.value) and "deleted" in str(err.value)
    assert not any((tmp_path / "cache").iterdir())


def test_unpublished_digest_downloads_with_a_warning_naming_the_digest(server, tmp_path, caplog) -> None:
    """An entry without a published sha256 downloads, but is reported as unverified with the file's digest (so the
    user can compare it by hand); the catalog listing says 'unpublished'."""
    entries = {"unverified": _entry(server, "unverified.pth", PAYLOAD, sha256=None)}
    with caplog.at_level(logging.WARNING, logger="rtdetr_tao.catalog"):
        path = Path(resolve_weights("unverified", catalog=entries, progress=False))
    assert path.read_bytes() == PAYLOAD
    warning = next(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "could not be verified" in warning and hashlib.sha256(PAYLOAD).hexdigest() in warning
    assert "unpublished" in catalog.format_catalog(entries)


def test_truncated_transfer_resumes_with_a_range_request(server, tmp_path) -> None:
    entries = {"big": _entry(server, "big.pth", PAYLOAD)}
    server.truncate_next = True
    with pytest.raises(CheckpointError, match="broke off"):
        resolve_weights("big", catalog=entries, progress=False)
    part = tmp_path / "cache" / "big.pth.part"
    kept = part.stat().st_size
    assert 0 < kept < len(PAYLOAD) and not (tmp_path / "cache" / "big.pth").exists()
    path = Path(resolve_weights("big", catalog=entries, progress=False))
    assert path.read_bytes() == PAYLOAD and not part.exists()
    assert server.requests[-1] == ("/big.pth", f"bytes={kept}-")


def test_server_down_names_the_url_and_where_to_put_the_file(server, tmp_path) -> None:
    entries = {"gone": _entry(server, "gone.pth", PAYLOAD)}
    server.shutdown()
    server.server_close()
    with pytest.raises(CheckpointError) as err:
        resolve_weights("gone", catalog=entries, progress=False)
    message = str(err.value)
    assert entries["gone"].url in message and str(tmp_path / "cache" / "gone.pth") in message and "\n" not in message
    (tmp_path / "cache" / "gone.pth").write_bytes(PAYLOAD)  # put there by hand: used, verified, no network
    assert Path(resolve_weights("gone", catalog=entries)).read_bytes() == PAYLOAD


def test_unknown_name_suggests_the_closest(capsys, tmp_path) -> None:
    with pytest.raises(CheckpointError, match="did you mean rtdetrv2_s_coco"):
        resolve_weights("rtdetrv2_s_cocoo")
    assert resolve_weights(str(tmp_path / "x.pth")) == str(tmp_path / "x.pth")  # paths pass through
    assert resolve_weights("s3://bucket/x.pth") == "s3://bucket/x.pth"


def test_weights_list_prints_the_catalog(capsys) -> None:
    assert main(["weights", "list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in CATALOG) and "RTDETR_CACHE" in out


def test_catalog_covers_the_official_release() -> None:
    presets = {e.model.get("preset") for e in CATALOG.values() if e.kind == "detector"}
    assert presets == {"s", "m", "m_star", "l", "x", "hgnetv2_l", "hgnetv2_x", "hgnetv2_h"}
    assert sum(e.model.get("cross_attn_method") == "discrete" for e in CATALOG.values()) == 4
    assert {e.model["backbone"] for e in CATALOG.values() if e.kind == "backbone"} == {
        "resnet_18", "resnet_34", "resnet_50", "resnet_101", "hgnetv2_l", "hgnetv2_x", "hgnetv2_h"
    }  # fmt: skip
    assert all(e.url.startswith("https://github.com/lyuwenyu/storage/releases/download/") for e in CATALOG.values())
    digests = [e.sha256 for e in CATALOG.values() if e.sha256 is not None]
    assert digests and all(len(d) == 64 and set(d) <= set("0123456789abcdef") for d in digests)


def test_a_catalog_name_loads_into_another_class_count(server, monkeypatch, caplog) -> None:
    """An 'official COCO checkpoint' (80 classes, served here) by name into a 4-class model: everything but the
    class heads loads, and the report says so in one line."""
    tiny = {"preset": "s", "hidden_dim": 32, "feat_channels": [32] * 3, "dim_feedforward": 64}
    tiny |= {"dec_dim_feedforward": 64, "num_queries": 20, "num_select": 20, "dn_number": 10, "nheads": 4}
    buffer = io.BytesIO()
    torch.save({"ema": {"module": build_model(tiny, num_classes=80).state_dict()}}, buffer)
    monkeypatch.setitem(CATALOG, "tiny_coco", _entry(server, "tiny_coco.pth", buffer.getvalue()))
    model = build_model(tiny, num_classes=4)
    report = load_weights(model, "tiny_coco")
    heads = [k for k, _ in report.skipped]
    assert heads and all(("score_head" in k) or ("denoising_class_embed" in k) for k in heads)
    assert not report.unexpected and set(report.missing) == set(heads)
    assert "class heads kept at initial values" in report.summary() and "skipped" not in report.summary()
    assert catalog.cache_dir().joinpath("tiny_coco.pth").is_file()
