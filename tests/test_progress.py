"""Progress of long steps: log lines with rate and ETA when not on a terminal (one per 10 %), a tqdm bar on one,
silence on ranks other than 0; S3 downloads (bytes), archive extraction, long opaque calls, automl trials."""

from __future__ import annotations

import logging
import re
import tarfile
import time

import pytest
from test_data import s3_server  # noqa: F401 - the loopback S3 fixture

from rtdetr_tao.progress import Progress, stage

LOGGER = "rtdetr_tao.progress"


def _lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def test_logs_one_line_per_ten_percent_with_rate_and_eta(caplog, monkeypatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Progress("work", total=200, unit="img", tty=False) as progress:
        for _ in range(200):
            progress.update()
    lines = _lines(caplog)
    assert len(lines) == 10
    assert lines[0].startswith("work: 10% (20/200 img), ") and "img/s" in lines[0] and "ETA 0:00:00" in lines[0]
    assert lines[-1].startswith("work: 100% (200/200 img)")


def test_bytes_unknown_totals_and_other_ranks(caplog, monkeypatch) -> None:
    caplog.set_level(logging.INFO, logger=LOGGER)
    with Progress("download", total=3 * 1024**2, unit="B", tty=False) as progress:
        progress.update(3 * 1024**2)
    assert _lines(caplog) == [_lines(caplog)[0]] and "(3.0 MiB/3.0 MiB)" in _lines(caplog)[0]
    caplog.clear()
    with Progress("stream", unit="frame", tty=False, every_s=3600) as progress:
        progress.update(5)
    assert re.fullmatch(r"stream: 5 frame, [\d.]+ frame/s", _lines(caplog)[0])  # no total: no percent, no ETA
    caplog.clear()
    monkeypatch.setenv("RANK", "1")
    with Progress("quiet", total=10, tty=False) as progress:
        progress.update(10)
    with stage("quiet stage"):
        pass
    assert _lines(caplog) == []


def test_terminal_gets_a_bar(capsys, monkeypatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    with Progress("bar", total=4, unit="frame", tty=True) as progress:
        for _ in range(4):
            progress.update()
    assert "frame/s" in capsys.readouterr().err


def test_stage_logs_start_heartbeat_and_duration(caplog, monkeypatch) -> None:
    monkeypatch.delenv("RANK", raising=False)
    caplog.set_level(logging.INFO, logger=LOGGER)
    with stage("engine build", every_s=0.05):
        time.sleep(0.3)
    lines = _lines(caplog)
    assert lines[0] == "engine build ..." and re.fullmatch(r"engine build: done in 0\.\d s", lines[-1])
    assert any("still running" in line and "elapsed" in line for line in lines[1:-1])


def test_s3_download_and_extraction_report_bytes(s3_server, tmp_path, caplog, monkeypatch) -> None:  # noqa: F811
    import boto3

    from rtdetr_tao.data.sources import download, extract

    monkeypatch.delenv("RANK", raising=False)
    caplog.set_level(logging.INFO, logger=LOGGER)
    folder = tmp_path / "files"
    folder.mkdir()
    for index in range(4):
        (folder / f"{index}.bin").write_bytes(bytes(range(256)) * 1024)  # 256 KiB each
    archive = tmp_path / "images.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted(folder.iterdir()):
            tar.add(path, arcname=path.name)
    client = boto3.client("s3")
    client.create_bucket(Bucket="data")
    client.upload_file(str(archive), "data", "images.tar.gz")
    local = download("s3://data/images.tar.gz", str(tmp_path / "cache"))
    extracted = extract(local, str(tmp_path / "cache"))
    assert sorted(p.name for p in extracted.iterdir()) == ["0.bin", "1.bin", "2.bin", "3.bin"]
    lines = _lines(caplog)
    assert any(line.startswith("download s3://data/images.tar.gz: 100% (") and "B/s" in line for line in lines)
    extraction = [line for line in lines if line.startswith("extract images.tar.gz:")]
    assert len(extraction) == 4 and extraction[-1].startswith("extract images.tar.gz: 100% (1.0 MiB/1.0 MiB)")
