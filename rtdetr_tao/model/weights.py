"""Weights interop: one loader for our checkpoints, the official RT-DETRv2 releases, TAO checkpoints and Hugging Face
``RTDetrV2ForObjectDetection`` weights, and an exporter back to the Hugging Face format.

Our module names are the official reference's, so official state dicts load as they are; Hugging Face names are
translated by :func:`hf_to_reference` (and back by :func:`reference_to_hf`), in both the layout of Hub files
(``encoder.encoder.0.layers.0.fc1``) and that of a live transformers 5 model (``encoder.aifi.0.layers.0.mlp.fc1``).
Tensors whose shape does not fit the model (another class count, another width) are skipped and reported, never
silently reshaped.
"""

from __future__ import annotations

import logging
import pickle
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from ..catalog import resolve_weights
from ..config.model import ModelSpec
from ..errors import CheckpointError, require
from ..io import atomic_write_json

log = logging.getLogger(__name__)

HF_WEIGHTS = "model.safetensors"

_HF_QKV = {"q_proj": 0, "k_proj": 1, "v_proj": 2}
_HF_RENAMES: list[tuple[str, Any]] = [
    (r"^model\.backbone\.model\.embedder\.embedder\.(\d)\.", lambda m: f"backbone.conv1.conv1_{int(m[1]) + 1}."),
    (r"^model\.backbone\.model\.encoder\.stages\.(\d+)\.layers\.(\d+)\.", r"backbone.res_layers.\1.blocks.\2."),
    (r"\.layer\.(\d)\.", lambda m: f".branch2{'abc'[int(m[1])]}."),
    (r"\.shortcut\.1\.", ".short.conv."),
    (r"\.shortcut\.", ".short."),
    (r"\.convolution\.", ".conv."),
    (r"\.normalization\.", ".norm."),
    (r"^model\.encoder_input_proj\.(\d+)\.0\.", r"encoder.input_proj.\1.conv."),
    (r"^model\.encoder_input_proj\.(\d+)\.1\.", r"encoder.input_proj.\1.norm."),
    (r"^model\.encoder\.aifi\.", "encoder.encoder."),
    (r"^model\.encoder\.", "encoder."),
    (r"^model\.decoder_input_proj\.(\d+)\.0\.", r"decoder.input_proj.\1.conv."),
    (r"^model\.decoder_input_proj\.(\d+)\.1\.", r"decoder.input_proj.\1.norm."),
    (r"^model\.decoder\.layers\.", "decoder.decoder.layers."),
    (r"^model\.decoder\.class_embed\.", "decoder.dec_score_head."),
    (r"^model\.decoder\.bbox_embed\.", "decoder.dec_bbox_head."),
    (r"^model\.decoder\.query_pos_head\.", "decoder.query_pos_head."),
    (r"^model\.enc_output\.0\.", "decoder.enc_output.proj."),
    (r"^model\.enc_output\.1\.", "decoder.enc_output.norm."),
    (r"^model\.", "decoder."),
    (r"\.self_attn\.o_proj\.", ".self_attn.out_proj."),
    (r"\.self_attn_layer_norm\.", ".norm1."),
    (r"\.encoder_attn_layer_norm\.", ".norm2."),
    (r"\.encoder_attn\.n_points_scale", ".cross_attn.num_points_scale"),
    (r"\.encoder_attn\.", ".cross_attn."),
    (r"\.(?:mlp\.)?fc1\.", ".linear1."),
    (r"\.(?:mlp\.)?fc2\.", ".linear2."),
]
CLASS_HEADS = ("dec_score_head.", "enc_score_head.", "denoising_class_embed.")
"""Names of the tensors whose shape depends on the class count."""
_NOT_WEIGHTS = ("num_batches_tracked", "decoder.anchors", "decoder.valid_mask")
_PREFIXES = ("module.", "model.", "ema.")


def hf_key_to_reference(key: str) -> tuple[str, int | None] | None:
    """One Hugging Face key → (our key, q/k/v slot of a fused attention projection or None); None for the top-level
    ``class_embed`` / ``bbox_embed`` aliases of the decoder heads."""
    if not key.startswith("model."):
        return None
    for pattern, repl in _HF_RENAMES:
        key = re.sub(pattern, repl, key)
    # the final layer norm is norm2 in the encoder's AIFI layer, norm3 in a decoder layer
    key = key.replace(".final_layer_norm.", ".norm3." if key.startswith("decoder.") else ".norm2.")
    match = re.search(r"\.self_attn\.([qkv]_proj)\.(weight|bias)$", key)
    if match:
        return key[: match.start()] + f".self_attn.in_proj_{match[2]}", _HF_QKV[match[1]]
    return key, None


def hf_to_reference(hf_state: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """A ``RTDetrV2ForObjectDetection`` state dict with our (= the official reference's) names; the separate
    q/k/v projections are fused into ``in_proj_weight`` / ``in_proj_bias``."""
    out: dict[str, Tensor] = {}
    fused: dict[str, dict[int, Tensor]] = {}
    for key, value in hf_state.items():
        mapped = hf_key_to_reference(key)
        if mapped is None:
            continue
        name, slot = mapped
        if slot is None:
            out[name] = value
        else:
            fused.setdefault(name, {})[slot] = value
    for name, parts in fused.items():
        if len(parts) != 3:
            raise CheckpointError(f"Hugging Face weights hold only part of the q/k/v projections of {name}")
        out[name] = torch.cat([parts[0], parts[1], parts[2]])
    return out


def reference_to_hf(state: Mapping[str, Tensor], hf_keys: list[str]) -> dict[str, Tensor]:
    """Our state dict → the Hugging Face state dict with exactly ``hf_keys`` (the keys of the target model)."""
    out: dict[str, Tensor] = {}
    for key in hf_keys:
        mapped = hf_key_to_reference(key if key.startswith("model.") else f"model.decoder.{key}")
        if mapped is None:
            continue
        name, slot = mapped
        if name not in state:
            raise CheckpointError(f"no weights for Hugging Face key {key} (ours: {name})")
        value = state[name]
        out[key] = value if slot is None else value.chunk(3)[slot]
    return out


@dataclass
class LoadReport:
    """What :func:`load_weights` did: ``loaded`` keys, ``skipped`` (key, reason) pairs for tensors that do not fit,
    ``missing`` model keys left at their initial values, ``unexpected`` checkpoint keys the model does not have."""

    source: str
    kind: str
    loaded: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return not (self.skipped or self.missing)

    def summary(self, limit: int = 5) -> str:
        def few(keys: list[str]) -> str:
            return ", ".join(keys[:limit]) + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")

        parts = [f"{len(self.loaded)} tensors loaded from {self.kind} weights {self.source}"]
        heads = [k for k, _ in self.skipped if any(h in k for h in CLASS_HEADS)]
        if heads:
            parts.append(f"class heads kept at initial values ({len(heads)} tensors for another class count)")
        others = [(k, why) for k, why in self.skipped if k not in heads]
        if others:
            parts.append(f"{len(others)} skipped: " + few([f"{k} ({why})" for k, why in others]))
        if self.missing:
            parts.append(f"{len(self.missing)} left at initial values: {few(self.missing)}")
        if self.unexpected:
            parts.append(f"{len(self.unexpected)} not in the model: {few(self.unexpected)}")
        return "; ".join(parts)


def load_torch_file(path: Path) -> Any:
    """``torch.load`` restricted to tensors and plain types (``weights_only``), with a clear error otherwise: an
    empty, truncated or damaged file says so; a file holding other Python objects says how to re-save it."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if "torchao" in str(exc):  # int8 weights of quantize.backend=torchao: its tensor types are safe once imported
            require("torchao", extra="torchao", purpose=f"reading {path} (quantized with torchao)")
            return torch.load(path, map_location="cpu", weights_only=True)
        lines = str(exc).strip().splitlines()
        detail = f"{type(exc).__name__}: {lines[0]}" if lines else type(exc).__name__
        if isinstance(exc, pickle.UnpicklingError) and "weights only" in str(exc).lower():
            raise CheckpointError(
                f"cannot read weights {path} safely ({detail}); rtdetr_tao only loads files with tensors and plain "
                "types (torch.load weights_only=True). Re-save the state dict with torch.save(model.state_dict(), path)"
            ) from None
        size = path.stat().st_size if path.is_file() else 0
        what = "is empty (0 bytes)" if size == 0 else f"is not a complete PyTorch file ({size} bytes; {detail})"
        raise CheckpointError(
            f"cannot read weights {path}: it {what}; it was probably truncated by an interrupted copy or download: "
            "copy or download it again"
        ) from None


def _read_hf_dir(path: Path) -> dict[str, Tensor]:
    weights = path / HF_WEIGHTS
    if not weights.is_file():
        raise CheckpointError(f"{path} has no {HF_WEIGHTS}; save Hugging Face models with save_pretrained()")
    return _safetensors().load_file(str(weights))


def _safetensors() -> Any:
    return require("safetensors.torch", extra="hf", purpose="reading .safetensors weights", package="safetensors")


def read_state_dict(
    source: str | Path | Mapping[str, Any], *, prefer_ema: bool = True
) -> tuple[dict[str, Tensor], str]:
    """The model state dict in ``source`` with our names, and the kind of file it came from.

    ``source``: a weights-catalog name (:mod:`rtdetr_tao.catalog`, downloaded on first use), a path to one of our
    checkpoints, an official RT-DETRv2 release (state dict under ``model`` or
    ``ema.module``), a TAO checkpoint (PyTorch Lightning ``state_dict``; its ``tao_model`` names the kind), a timm
    training checkpoint (``state_dict`` / ``state_dict_ema``), a plain state dict, a Hugging Face directory
    (``config.json`` + ``model.safetensors``) or ``.safetensors`` file; or an already loaded mapping.
    ``prefer_ema``: take the EMA weights when the checkpoint has both.
    """
    if isinstance(source, Mapping):
        raw: Any = source
    else:
        path = Path(resolve_weights(str(source)))
        if path.is_dir():
            raw = _read_hf_dir(path)
        elif not path.is_file():
            raise CheckpointError(f"weights file not found: {path}")
        elif path.suffix == ".safetensors":
            raw = _safetensors().load_file(str(path))
        else:
            raw = load_torch_file(path)
    if not isinstance(raw, Mapping):
        raise CheckpointError(f"{source} holds a {type(raw).__name__}, not a state dict or checkpoint")
    if "state_dict_encrypted" in raw:
        raise CheckpointError(
            f"{source} is an encrypted TAO checkpoint; decrypt it with TAO (its encryption key) and save the "
            "decrypted checkpoint, then use that file"
        )
    kind = "rtdetr_tao" if raw.get("format") == "rtdetr_tao" else "official"
    ema = raw.get("ema")
    if prefer_ema and isinstance(ema, Mapping) and isinstance(ema.get("module"), Mapping):
        state = ema["module"]
    elif isinstance(raw.get("model"), Mapping):
        state = raw["model"]
    elif prefer_ema and isinstance(raw.get("state_dict_ema"), Mapping):  # timm's train.py: EMA copy beside the model
        state, kind = raw["state_dict_ema"], "timm (EMA)"
    elif isinstance(raw.get("state_dict"), Mapping):
        # TAO's Lightning checkpoints name their model (on_save_checkpoint: checkpoint["tao_model"]); TAO's EMA
        # callback writes the averaged weights as a separate checkpoint of the same layout (<name>-EMA.ckpt)
        state, kind = raw["state_dict"], f"TAO {raw['tao_model']}" if "tao_model" in raw else "TAO"
    else:
        state, kind = raw, "state dict"
    tensors = {k: v for k, v in state.items() if isinstance(v, Tensor)}
    if not tensors:
        raise CheckpointError(f"{source} contains no tensors")
    if any(k.startswith("model.backbone.model.") or k.startswith("model.decoder.layers.") for k in tensors):
        return hf_to_reference(tensors), "Hugging Face"
    return tensors, kind


def _strip_prefixes(state: dict[str, Tensor], model_keys: set[str]) -> dict[str, Tensor]:
    """Drop wrapper prefixes (``module.`` of DDP, ``model.`` of TAO's Lightning module) while that matches more
    model keys; TAO's ``backbone.0.`` becomes ``backbone.``."""
    state = {re.sub(r"^((?:model\.|module\.)*)backbone\.0\.", r"\1backbone.", k): v for k, v in state.items()}
    while True:
        hits = sum(k in model_keys for k in state)
        for prefix in _PREFIXES:
            stripped = {k.removeprefix(prefix): v for k, v in state.items()}
            if sum(k in model_keys for k in stripped) > hits:
                state = stripped
                break
        else:
            return state


@torch.no_grad()
def load_weights(
    model: nn.Module, source: str | Path | Mapping[str, Any], *, prefer_ema: bool = True, prefix: str = ""
) -> LoadReport:
    """Copy every tensor of ``source`` that fits into ``model`` (see :func:`read_state_dict` for the formats).

    Tensors with another shape (another class count, say) are skipped and reported; nothing is reshaped.
    ``prefix``: load into the submodule with this name prefix only (``"backbone."``).
    Raises :class:`CheckpointError` when nothing at all fits: the file belongs to another model.
    """
    state, kind = read_state_dict(source, prefer_ema=prefer_ema)
    own = {k: v for k, v in model.state_dict().items() if k.startswith(prefix) and not k.endswith(_NOT_WEIGHTS)}
    state = _strip_prefixes(state, set(own))
    if prefix and not any(k in own for k in state):
        state = {prefix + k: v for k, v in state.items()}
    report = LoadReport(source=str(source) if not isinstance(source, Mapping) else "<state dict>", kind=kind)
    fitting: dict[str, Tensor] = {}
    for key, value in state.items():
        if key.endswith(_NOT_WEIGHTS):
            continue
        if key not in own:
            report.unexpected.append(key)
        elif own[key].shape != value.shape:
            report.skipped.append((key, f"shape {tuple(value.shape)} vs model {tuple(own[key].shape)}"))
        else:
            fitting[key] = value
    if not fitting:
        raise CheckpointError(
            f"none of the {len(state)} tensors in {report.source} fits the model ({kind} weights); "
            "check model.backbone and the other model.* keys against the checkpoint's architecture"
        )
    params = dict(model.named_parameters()) | dict(model.named_buffers())
    for key, value in fitting.items():
        params[key].copy_(value)
    report.loaded = sorted(fitting)
    report.missing = sorted(set(own) - set(fitting))
    return report


MAX_UNLOADED_SHARE = 0.5
"""Pretrained weights that leave a larger share of the model's (or its backbone's) tensors unloaded are reported as
belonging to another architecture."""


def check_fit(report: LoadReport, *, strict: bool, key: str) -> None:
    """Warn (``strict``: raise :class:`CheckpointError`) when ``report`` left more than ``MAX_UNLOADED_SHARE`` of the
    model's or the backbone's tensors unloaded; ``key`` is the spec key that named the weights."""
    shares = {}
    for part, prefix in (("model", ""), ("backbone", "backbone.")):
        total = sum(k.startswith(prefix) for k in (*report.loaded, *report.missing))
        unloaded = sum(k.startswith(prefix) for k in report.missing)
        shares[part] = (unloaded, total)
    if not any(total and unloaded / total > MAX_UNLOADED_SHARE for unloaded, total in shares.values()):
        return
    (model_n, model_total), (bb_n, bb_total) = shares["model"], shares["backbone"]
    message = (
        f"{key} {report.source} leaves {model_n} of {model_total} model tensors ({bb_n} of {bb_total} backbone "
        f"tensors) unloaded ({report.summary(limit=3)}): it seems to be another architecture; check model.backbone "
        "and the other model.* keys"
    )
    if strict:
        raise CheckpointError(message + ", or set train.strict_load=false to train with it anyway")
    log.warning("%s, or set train.strict_load=true to make this an error", message)


_WRAPPERS = re.compile(r"^(?:(?:module|model|_orig_mod)\.)+")
"""Prefixes of wrappers around a model: DDP (``module.``), TAO's Lightning modules (``model.``, ``model.model.``),
``torch.compile`` (``_orig_mod.``)."""


def backbone_state_dict(state: Mapping[str, Tensor]) -> tuple[dict[str, Tensor], list[str]]:
    """The backbone's tensors in a state dict of any wrapping, with the backbone's own names, and the keys left out.

    Wrapper prefixes (:data:`_WRAPPERS`) are removed. A detector's state dict (keys under ``backbone.``: ours, the
    official RT-DETRv2's, TAO's RT-DETR ``model.model.backbone.``, MMLab's, TAO's Joiner ``backbone.0.``) is cut to
    its backbone; the other keys (encoder, decoder) are returned as left out, as are MMLab's ``ema_*`` copies. A
    classifier's state dict (TAO classification: ``model.`` + the backbone's names + its head) is kept whole: its
    head is the backbone's business to ignore (the loader reports it).
    """
    state = {_WRAPPERS.sub("", k): v for k, v in state.items()}
    left_out = [k for k in state if k.startswith("ema_")]
    state = {k: v for k, v in state.items() if not k.startswith("ema_")}
    if any(k.startswith("backbone.") for k in state):
        left_out += [k for k in state if not k.startswith("backbone.")]
        state = {k.removeprefix("backbone."): v for k, v in state.items() if k.startswith("backbone.")}
        if all(k.startswith("0.") for k in state):
            state = {k.removeprefix("0."): v for k, v in state.items()}
    return state, left_out


def load_backbone_weights(model: nn.Module, source: str | Path) -> LoadReport:
    """ImageNet (or any) backbone weights into ``model.backbone``, from any file :func:`read_state_dict` reads: a
    bare backbone state dict (official PResNet-vd or HGNetv2 ImageNet weights, a timm model's), a classifier or a
    detector in any wrapping (:func:`backbone_state_dict`: TAO's Lightning checkpoints, DDP). Backbones with an
    ``adapt_state_dict`` method translate other layouts of their architecture (timm ResNet names for PResNet, the
    original ConvNeXt / EfficientViT layouts that TAO uses for timm backbones). Keys that fit nowhere are reported."""
    state, kind = read_state_dict(source)
    state, left_out = backbone_state_dict(state)
    adapt = getattr(model.backbone, "adapt_state_dict", None)
    if adapt is not None:
        state = adapt(state)
    report = load_weights(model, {f"backbone.{k}": v for k, v in state.items()}, prefix="backbone.")
    report.unexpected += left_out
    report.source, report.kind = str(source), kind
    return report


_HF_RESNETS: dict[int, dict[str, Any]] = {
    18: {"depths": [2, 2, 2, 2], "hidden_sizes": [64, 128, 256, 512], "layer_type": "basic"},
    34: {"depths": [3, 4, 6, 3], "hidden_sizes": [64, 128, 256, 512], "layer_type": "basic"},
    50: {"depths": [3, 4, 6, 3], "hidden_sizes": [256, 512, 1024, 2048], "layer_type": "bottleneck"},
    101: {"depths": [3, 4, 23, 3], "hidden_sizes": [256, 512, 1024, 2048], "layer_type": "bottleneck"},
}


def hf_config(model_spec: ModelSpec | Mapping[str, Any], num_classes: int, class_names: list[str] | None = None) -> Any:
    """The ``transformers.RTDetrV2Config`` of a ``ModelSpec``. Hugging Face always reads the last decoder layer, so
    a spec with ``eval_idx`` k maps to k + 1 decoder layers (identical inference outputs)."""
    transformers = require("transformers", extra="hf", purpose="Hugging Face conversion")
    if isinstance(model_spec, Mapping):
        model_spec = ModelSpec.model_validate(model_spec)
    if not model_spec.backbone.startswith("resnet_"):
        raise CheckpointError(
            f"Hugging Face RT-DETRv2 has ResNet-vd backbones only; model.backbone {model_spec.backbone} "
            "cannot be expressed in its config"
        )
    depth = int(model_spec.backbone.removeprefix("resnet_"))
    resnet = _HF_RESNETS[depth]
    out_features = [f"stage{i + 1}" for i in model_spec.return_interm_indices]
    backbone = transformers.RTDetrResNetConfig(**resnet, out_features=out_features)
    widths = [64, 128, 256, 512]
    expansion = 4 if resnet["layer_type"] == "bottleneck" else 1
    layers = model_spec.dec_layers if model_spec.eval_idx < 0 else model_spec.eval_idx + 1
    points = set(model_spec.points_per_level)
    if len(points) != 1:
        raise CheckpointError(
            f"Hugging Face RT-DETRv2 samples the same number of points on every level; model.num_points "
            f"{model_spec.num_points} cannot be expressed in its config"
        )
    names = class_names or [f"class_{i}" for i in range(num_classes)]
    return transformers.RTDetrV2Config(
        backbone_config=backbone,
        num_labels=num_classes,
        id2label=dict(enumerate(names)),
        label2id={n: i for i, n in enumerate(names)},
        encoder_in_channels=[widths[i] * expansion for i in model_spec.return_interm_indices],
        feat_strides=list(model_spec.feat_strides),
        encoder_hidden_dim=model_spec.encoder_width,
        encoder_layers=model_spec.enc_layers,
        encoder_ffn_dim=model_spec.dim_feedforward,
        encoder_attention_heads=model_spec.nheads,
        encode_proj_layers=list(model_spec.use_encoder_idx),
        hidden_expansion=model_spec.expansion,
        d_model=model_spec.hidden_dim,
        num_queries=model_spec.num_queries,
        decoder_in_channels=list(model_spec.feat_channels),
        decoder_ffn_dim=model_spec.dec_dim_feedforward,
        num_feature_levels=model_spec.num_feature_levels,
        decoder_n_levels=model_spec.num_feature_levels,
        decoder_n_points=points.pop(),
        decoder_layers=layers,
        decoder_attention_heads=model_spec.nheads,
        num_denoising=model_spec.dn_number,
        label_noise_ratio=model_spec.label_noise_ratio,
        box_noise_scale=model_spec.box_noise_scale,
        decoder_method=model_spec.cross_attn_method,
        freeze_backbone_batch_norms=model_spec.freeze_norm,
        activation_function=model_spec.act,
        encoder_activation_function=model_spec.enc_act,
        decoder_activation_function="relu",
        positional_encoding_temperature=int(model_spec.pe_temperature),
        eval_size=None,
    )


def save_hf(
    model: nn.Module, out_dir: str | Path, model_spec: ModelSpec | Mapping[str, Any], class_names: list[str]
) -> Path:
    """Write ``model`` as a Hugging Face ``RTDetrV2ForObjectDetection`` directory (``config.json`` +
    ``model.safetensors``) that ``from_pretrained(out_dir)`` loads."""
    transformers = require("transformers", extra="hf", purpose="Hugging Face export")
    config = hf_config(model_spec, len(class_names), class_names)
    hf_model = transformers.RTDetrV2ForObjectDetection(config)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    hf_state = reference_to_hf(state, list(hf_model.state_dict()))
    missing, unexpected = hf_model.load_state_dict(hf_state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise CheckpointError(f"Hugging Face export does not fit: missing {missing[:5]}, unexpected {unexpected[:5]}")
    out = Path(out_dir)
    hf_model.save_pretrained(out)
    atomic_write_json(out / "rtdetr_tao.json", {"class_names": class_names})
    return out
