"""rtdetr quantize with NVIDIA ModelOpt on the CPU: layer rules, INT8 calibration, evaluate and Q/DQ export."""

from __future__ import annotations

import json

import onnx
import onnxruntime as ort
import pytest
import torch
from test_export_deploy import trained  # noqa: F401 - the trained tiny model fixture
from test_train import TINY_MODEL

from rtdetr_tao.cli import main
from rtdetr_tao.config.quantize import QuantizeSpec
from rtdetr_tao.model.build import build_model
from rtdetr_tao.model.quantize import modelopt_config, plan_layers

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


def test_torchao_int8_quantize_evaluate_and_no_onnx(trained, capsys, caplog) -> None:  # noqa: F811
    pytest.importorskip("torchao", reason="quantize.backend=torchao needs torchao (pip install 'rtdetr-tao[torchao]')")
    from rtdetr_tao.config import load_spec
    from rtdetr_tao.engine.restore import load_trained_model
    from rtdetr_tao.model.torchao_quant import is_torchao_tensor, quantized_layers

    spec, root, val = str(trained["spec"]), trained["root"], trained["val"]
    calib = f"dataset.quant_calibration_data_sources={{image_dir: {val.image_dir}, json_file: {val.json_file}}}"
    out = root / "results" / "quantize"
    quantized = out / "quantized_model.pth"
    base = [
        "quantize",
        "-e",
        spec,
        f"quantize.model_path={trained['ckpt']}",
        INT8_ALL,
        calib,
        "quantize.backend=torchao",
    ]
    loaded = load_spec(spec)
    float_model = load_trained_model(str(trained["ckpt"]), loaded.spec).model
    linear = {name for name, m in float_model.named_modules() if isinstance(m, torch.nn.Linear)}
    images = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        float_logits = float_model(images)["pred_logits"]

    for mode, scheme in (("weight_only_ptq", "int8_weight_only"), ("static_ptq", "int8_dynamic")):
        assert main([*base, f"quantize.mode={mode}", "quantize.calibration_batches=2"]) == 0
        assert "quantize.calibration_batches: not used by quantize.backend=torchao" in caplog.text
        caplog.clear()
        summary = json.loads((out / "quantization_summary.json").read_text())
        assert summary["backend"] == "torchao" and summary["mode"] == mode
        layers = set(summary["layers"])
        assert layers and layers <= linear and not any(name.endswith("self_attn.out_proj") for name in layers)
        assert any(".conv" in name for name in summary["left_in_float"])  # torchao leaves convolutions in float
        assert summary["weights_bytes_after"] < summary["weights_bytes_before"]
        assert summary["mAP_before"] is not None and summary["mAP_after"] is not None
        state = torch.load(quantized, weights_only=True)  # torchao's tensor types load safely once imported
        assert set(state["torchao"]["layers"].values()) == {scheme}
        assert all(is_torchao_tensor(state["model"][f"{name}.weight"]) for name in layers)

        model = load_trained_model(str(quantized), loaded.spec)
        assert model.quantized_with == "torchao" and set(quantized_layers(model.model)) == layers
        with torch.no_grad():
            logits = model.model(images)["pred_logits"]
        assert 0 < (logits - float_logits).abs().max() < 1.0  # int8 weights: close to, not equal to, float

        capsys.readouterr()
        assert main(["evaluate", "-e", spec, f"evaluate.checkpoint={quantized}", "evaluate.is_quantized=true"]) == 0
        evaluated = json.loads((root / "results" / "evaluate" / "results.json").read_text())
        assert evaluated["AP"] == pytest.approx(summary["mAP_after"]["mAP"])

    infer_out = root / "ao_inference"
    infer = ["inference", "-e", spec, f"inference.checkpoint={quantized}", f"inference.results_dir={infer_out}"]
    assert main([*infer, "inference.is_quantized=true"]) == 0
    assert len(list((infer_out / "labels").iterdir())) == 16
    export = ["export", "-e", spec, f"export.checkpoint={quantized}", f"export.onnx_file={root / 'ao.onnx'}"]
    assert main([*export, "export.is_quantized=true"]) == 2
    assert "quantized with quantize.backend=torchao" in capsys.readouterr().err
    fp8 = "quantize.layers=[{module_name: '*', weights: {dtype: fp8_e4m3fn}}]"
    assert main([*base, fp8]) == 2
    assert "torchao quantizes to int8 only" in capsys.readouterr().err
