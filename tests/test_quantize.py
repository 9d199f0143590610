"""rtdetr quantize with NVIDIA ModelOpt on the CPU: layer rules, INT8 calibration, evaluate and Q/DQ export."""

from __future__ import annotations

import json

import onnx
import onnxruntime as ort
import pytest
import torch
from test_export_deploy import trained  # noqa: F401 - the trained tiny model fixture
from test_train import TINY_MODEL

from rtdetr_tao.actions.quantize import modelopt_config, plan_layers
from rtdetr_tao.cli import main
from rtdetr_tao.config.quantize import QuantizeSpec
from rtdetr_tao.model.build import build_model

INT8_ALL = "quantize.layers=[{module_name: '*', weights: {dtype: int8}, activations: {dtype: int8}}]"


def test_layer_rules() -> None:
    model = build_model(TINY_MODEL, num_classes=4)
    cfg = QuantizeSpec.model_validate({
        "layers": [
            {"module_name": "*", "weights": {"dtype": "int8"}, "activations": {"dtype": "int8"}},
            {"module_name": "Linear", "activations": {"dtype": "native"}},  # class name; later rules win
            {"module_name": "*encoder*", "weights": {"dtype": "float8_e4m3fn"}},
        ],
        "skip_names": ["backbone.conv1.*"],
    })  # fmt: skip
    plans = plan_layers(model, cfg)
    assert not any(name.startswith("backbone.conv1.") for name in plans)
    assert plans["backbone.res_layers.0.blocks.0.branch2a.conv"].weights == "int8"
    assert plans["decoder.decoder.layers.0.linear1"].activations == "native"
    assert plans["encoder.input_proj.0.conv"].weights == "fp8_e4m3fn"
    quant_cfg = modelopt_config(plans, cfg)["quant_cfg"]
    assert quant_cfg["*"] == {"enable": False}
    assert quant_cfg["encoder.input_proj.0.conv.weight_quantizer"]["num_bits"] == (4, 3)
    assert "decoder.decoder.layers.0.linear1.input_quantizer" not in quant_cfg
    with pytest.raises(Exception, match="leave every layer in float"):
        plan_layers(model, QuantizeSpec())


def test_int8_quantize_evaluate_and_qdq_export(trained, capsys) -> None:  # noqa: F811
    spec, root = str(trained["spec"]), trained["root"]
    val = trained["val"]
    calib = f"dataset.quant_calibration_data_sources={{image_dir: {val.image_dir}, json_file: {val.json_file}}}"
    args = [
        "quantize",
        "-e",
        spec,
        f"quantize.model_path={trained['ckpt']}",
        INT8_ALL,
        calib,
        "quantize.calibration_batches=2",
    ]
    assert main(args) == 0
    out = root / "results" / "quantize"
    summary = json.loads((out / "quantization_summary.json").read_text())
    assert summary["layers"] and all(p["weights"] == "int8" for p in summary["layers"].values())
    assert summary["mAP_before"] is not None and summary["mAP_after"] is not None
    state = torch.load(out / "quantized_model.pth", weights_only=True)
    assert state["modelopt_state"] and any(k.endswith("_amax") for k in state["model"])

    quantized = out / "quantized_model.pth"
    assert main(["evaluate", "-e", spec, f"evaluate.checkpoint={quantized}", "evaluate.is_quantized=true"]) == 0
    onnx_file = root / "qdq.onnx"
    export = ["export", "-e", spec, f"export.checkpoint={quantized}", f"export.onnx_file={onnx_file}"]
    assert main([*export, "export.is_quantized=true"]) == 0
    ops = {node.op_type for node in onnx.load(str(onnx_file)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    session = ort.InferenceSession(str(onnx_file))
    labels, boxes, _ = session.run(
        None, {"images": torch.rand(2, 3, 64, 64).numpy(), "orig_target_sizes": [[64.0, 64.0]] * 2}
    )
    assert labels.shape == (2, 20) and torch.isfinite(torch.from_numpy(boxes)).all()
    assert main(export) == 2  # a quantized checkpoint without export.is_quantized
    assert "is a quantized checkpoint; set export.is_quantized=true" in capsys.readouterr().err
    assert main(["evaluate", "-e", spec, f"evaluate.checkpoint={quantized}"]) == 2
    assert "set evaluate.is_quantized=true" in capsys.readouterr().err
    infer = ["inference", "-e", spec, f"inference.checkpoint={trained['ckpt']}", "inference.is_quantized=true"]
    assert main([*infer, f"dataset.infer_data_sources={{image_dir: [{val.image_dir}]}}"]) == 2
    assert "is not a quantized checkpoint; set inference.is_quantized=false" in capsys.readouterr().err


def test_fp8_on_cpu_is_a_clear_error(trained, capsys) -> None:  # noqa: F811
    fp8 = "quantize.layers=[{module_name: '*', weights: {dtype: fp8_e4m3fn}, activations: {dtype: fp8_e4m3fn}}]"
    calib = f"dataset.quant_calibration_data_sources={{image_dir: {trained['val'].image_dir}}}"
    args = ["quantize", "-e", str(trained["spec"]), f"quantize.model_path={trained['ckpt']}", fp8, calib]
    assert main(args) == 2
    assert "needs a CUDA GPU" in capsys.readouterr().err
