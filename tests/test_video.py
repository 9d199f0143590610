"""Video and stream inference: a synthetic video of moving shapes through ``rtdetr inference`` and
``rtdetr-deploy inference`` (ONNX Runtime), frame k against ``rtdetr inference`` on frame k as an image, the
Predictor's frames, Ctrl-C, tracking and the one-line error of an unreadable video."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from rtdetr_deploy.cli import main as deploy_main
from test_export_deploy import _export, trained  # noqa: F401 - the trained tiny model fixture

from rtdetr_tao.cli import main
from rtdetr_tao.data.synthetic import write_video
from rtdetr_tao.eval.detections import ImageDetections
from rtdetr_tao.predictor import Predictor

av = pytest.importorskip("av", reason="PyAV is the optional 'video' extra")

FRAMES = 8


def _frames(path: Path) -> tuple[list, str, float]:
    """(decoded RGB frames, codec, fps) of a video, read with PyAV directly."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return frames, stream.codec_context.name, float(stream.average_rate)


def _lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


@pytest.fixture(scope="module")
def clip(trained) -> Path:  # noqa: F811
    return write_video(trained["root"] / "clip.avi", FRAMES, size=(64, 64), fps=10, seed=4)


def test_video_in_gives_annotated_video_and_one_json_line_per_frame(trained, clip, tmp_path) -> None:  # noqa: F811
    spec, out = str(trained["spec"]), tmp_path / "torch"
    source = f"dataset.infer_data_sources={{image_dir: [{clip}]}}"
    assert main(["inference", "-e", spec, source, f"inference.checkpoint={trained['ckpt']}",
                 f"inference.results_dir={out}"]) == 0  # fmt: skip
    frames, codec, fps = _frames(out / "videos" / "clip_annotated.avi")
    source_frames, source_codec, source_fps = _frames(clip)
    assert len(frames) == FRAMES and (codec, fps) == (source_codec, source_fps) == ("mpeg4", 10.0)
    assert any(not np.array_equal(a, b) for a, b in zip(frames, source_frames, strict=True))  # boxes drawn
    lines = _lines(out / "videos" / "clip.jsonl")
    assert [line["frame"] for line in lines] == list(range(FRAMES))
    assert [line["timestamp"] for line in lines] == pytest.approx([k / 10 for k in range(FRAMES)])
    assert all(len(line["boxes"]) == len(line["scores"]) == len(line["classes"]) for line in lines)
    assert sum(len(line["boxes"]) for line in lines) > 0  # conf_threshold 0: num_select boxes per frame

    # frame k as an image through `rtdetr inference` gives the same detections
    k = 5
    images = tmp_path / "frame"
    images.mkdir()
    from PIL import Image

    Image.fromarray(source_frames[k]).save(images / f"frame_{k}.png")
    image_out = tmp_path / "image"
    assert main(["inference", "-e", spec, f"dataset.infer_data_sources={{image_dir: [{images}]}}",
                 f"inference.checkpoint={trained['ckpt']}", f"inference.results_dir={image_out}"]) == 0  # fmt: skip
    expected = sorted(json.loads((image_out / "results.json").read_text()), key=lambda r: -r["score"])
    line = lines[k]
    assert line["scores"] == pytest.approx([r["score"] for r in expected], abs=1e-5)
    assert line["category_ids"] == [r["category_id"] for r in expected]
    xywh = [[x1, y1, x2 - x1, y2 - y1] for x1, y1, x2, y2 in line["boxes"]]
    np.testing.assert_allclose(xywh, [r["bbox"] for r in expected], atol=1e-2)

    # the Predictor yields the same frames
    predictor = Predictor.from_checkpoint(trained["ckpt"], input_size=(64, 64))
    for index, found in predictor.predict_video(clip, threshold=0.0, batch_size=3):
        assert found.scores.tolist() == pytest.approx(lines[index]["scores"], abs=1e-5)
        assert found.names == lines[index]["classes"]
    assert index == FRAMES - 1

    # rtdetr-deploy with ONNX Runtime writes the same records
    onnx_file = _export(trained, "video.onnx")
    deploy_out = tmp_path / "deploy"
    assert deploy_main(["inference", "-e", spec, source, f"inference.trt_engine={onnx_file}",
                        f"inference.results_dir={deploy_out}"]) == 0  # fmt: skip
    deployed = _lines(deploy_out / "videos" / "clip.jsonl")
    assert len(_frames(deploy_out / "videos" / "clip_annotated.avi")[0]) == FRAMES
    for ours, theirs in zip(lines, deployed, strict=True):
        assert ours["frame"] == theirs["frame"] and ours["classes"][:5] == theirs["classes"][:5]
        np.testing.assert_allclose(ours["scores"], theirs["scores"], atol=1e-4)


def test_unreadable_video_is_one_line_error(trained, tmp_path, capsys) -> None:  # noqa: F811
    bad = tmp_path / "broken.mp4"
    bad.write_bytes(b"not a video at all" * 50)
    code = main(["inference", "-e", str(trained["spec"]), f"dataset.infer_data_sources={{image_dir: [{bad}]}}",
                 f"inference.checkpoint={trained['ckpt']}", f"inference.results_dir={tmp_path / 'out'}"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("rtdetr: error: cannot read video") and str(bad) in err[0]


def _moving_box(images: list) -> list[ImageDetections]:
    """A stand-in detector: one box that follows the frame count."""
    _moving_box.calls += 1
    offset = 4 * _moving_box.calls
    return [ImageDetections(0, [[offset, 10, offset + 20, 30]], [0.9], [1]) for _ in images]


def test_ctrl_c_leaves_a_finalised_video_and_complete_json_lines(tmp_path) -> None:
    from rtdetr_tao.outputs.video import annotate_video

    clip = write_video(tmp_path / "clip.mp4", 12, size=(64, 64), fps=5)
    calls = []

    def detect(images: list) -> list[ImageDetections]:
        calls.append(len(images))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return [ImageDetections(0, [[5, 5, 30, 30]], [0.8], [0]) for _ in images]

    result = annotate_video(clip, tmp_path / "out", detect, ["a", "b"], [1, 3], conf_threshold=0.5, batch_size=4)
    assert result.interrupted and result.frames == 8
    assert len(_frames(result.video)[0]) == 8  # a playable file with every frame done
    lines = _lines(result.jsonl)
    assert [line["frame"] for line in lines] == list(range(8)) and lines[0]["classes"] == ["a"]
    assert not list((tmp_path / "out").glob(".*partial*"))


def test_tracking_attaches_stable_ids(tmp_path) -> None:
    pytest.importorskip("trackers", reason="inference.track needs the optional 'track' extra")
    from rtdetr_tao.outputs.video import annotate_video

    clip = write_video(tmp_path / "clip.mp4", 6, size=(64, 64), fps=5)
    _moving_box.calls = 0
    result = annotate_video(clip, tmp_path / "out", _moving_box, ["a", "b"], [1, 3], conf_threshold=0.5, track=True)
    ids = [line["track_ids"] for line in _lines(result.jsonl)]
    assert ids[0] == [-1]  # a track is confirmed on its second frame
    assert all(len(i) == 1 for i in ids[1:]) and len({i[0] for i in ids[1:]}) == 1 and ids[1][0] >= 0  # one id


def test_stream_key_reads_a_url_and_needs_something_to_read(trained, clip, tmp_path, capsys) -> None:  # noqa: F811
    spec, out = str(trained["spec"]), tmp_path / "stream"
    url = clip.resolve().as_uri()  # FFmpeg's file: protocol stands in for rtsp:// (no network in tests)
    assert main(["inference", "-e", spec, f"dataset.infer_data_sources={{image_dir: [], stream: '{url}'}}",
                 f"inference.checkpoint={trained['ckpt']}", f"inference.results_dir={out}"]) == 0  # fmt: skip
    assert len(_frames(out / "videos" / "stream_annotated.mp4")[0]) == FRAMES
    assert len(_lines(out / "videos" / "stream.jsonl")) == FRAMES
    assert not (out / "results.json").exists()  # no images, no image outputs
    assert main(["inference", "-e", spec, "dataset.infer_data_sources={image_dir: []}",
                 f"inference.checkpoint={trained['ckpt']}"]) == 2  # fmt: skip
    assert "set stream" in capsys.readouterr().err
