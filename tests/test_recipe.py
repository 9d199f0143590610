"""``train.recipe: deim`` against DEIM's own code: the matchability-aware loss, the flat-cosine schedule, the
mosaic's boxes and the batch mixup; and how the recipe fills the keys a spec leaves null.

DEIM (ShihuaHuang95/DEIM) is not on the package index, so its formulas are transcribed below from commit
a9aa4adce6b5e97b2a6ca9452bf01b7c35440913, each with its file and function.
"""

from __future__ import annotations

import math
import random

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image
from test_model_criterion import _random_outputs, _targets

from rtdetr_tao.config.loader import load_spec
from rtdetr_tao.config.model import ModelSpec
from rtdetr_tao.data.transforms import DenseO2O, TrainTransform, mixup, mosaic_tiles
from rtdetr_tao.engine.optim import LRSchedule
from rtdetr_tao.model.build import build_criterion
from rtdetr_tao.model.criterion import _denoising_indices

C = 5


# --- DEIM, transcribed -----------------------------------------------------------------------------------------


def _deim_box_iou(boxes1: torch.Tensor, boxes2: torch.Tensor) -> torch.Tensor:
    """engine/deim/box_ops.py ``box_iou`` (xyxy), the IoU half of its return value."""
    area1 = (boxes1[:, 2] - boxes1[:, 0]) * (boxes1[:, 3] - boxes1[:, 1])
    area2 = (boxes2[:, 2] - boxes2[:, 0]) * (boxes2[:, 3] - boxes2[:, 1])
    lt = torch.max(boxes1[:, None, :2], boxes2[:, :2])
    rb = torch.min(boxes1[:, None, 2:], boxes2[:, 2:])
    wh = (rb - lt).clamp(min=0)
    inter = wh[:, :, 0] * wh[:, :, 1]
    return inter / (area1[:, None] + area2 - inter)


def _cxcywh_to_xyxy(x: torch.Tensor) -> torch.Tensor:
    cx, cy, w, h = x.unbind(-1)
    return torch.stack([cx - 0.5 * w, cy - 0.5 * h, cx + 0.5 * w, cy + 0.5 * h], dim=-1)


def _deim_loss_labels_mal(outputs, targets, indices, num_boxes, num_classes, gamma, mal_alpha):
    """engine/deim/deim_criterion.py ``DEIMCriterion.loss_labels_mal`` (values=None)."""
    batch_idx = torch.cat([torch.full_like(src, i) for i, (src, _) in enumerate(indices)])
    src_idx = torch.cat([src for (src, _) in indices])
    src_boxes = outputs["pred_boxes"][batch_idx, src_idx]
    target_boxes = torch.cat([t["boxes"][i] for t, (_, i) in zip(targets, indices, strict=True)], dim=0)
    ious = torch.diag(_deim_box_iou(_cxcywh_to_xyxy(src_boxes), _cxcywh_to_xyxy(target_boxes))).detach()
    src_logits = outputs["pred_logits"]
    target_classes_o = torch.cat([t["labels"][J] for t, (_, J) in zip(targets, indices, strict=True)])
    target_classes = torch.full(src_logits.shape[:2], num_classes, dtype=torch.int64)
    target_classes[batch_idx, src_idx] = target_classes_o
    target = F.one_hot(target_classes, num_classes=num_classes + 1)[..., :-1]
    target_score_o = torch.zeros_like(target_classes, dtype=src_logits.dtype)
    target_score_o[batch_idx, src_idx] = ious.to(target_score_o.dtype)
    target_score = target_score_o.unsqueeze(-1) * target
    pred_score = F.sigmoid(src_logits).detach()
    target_score = target_score.pow(gamma)
    if mal_alpha is not None:
        weight = mal_alpha * pred_score.pow(gamma) * (1 - target) + target
    else:
        weight = pred_score.pow(gamma) * (1 - target) + target
    loss = F.binary_cross_entropy_with_logits(src_logits, target_score, weight=weight, reduction="none")
    return loss.mean(1).sum() * src_logits.shape[1] / num_boxes


def _deim_flat_cosine_schedule(total_iter, warmup_iter, flat_iter, no_aug_iter, current_iter, init_lr, min_lr):
    """engine/optim/lr_scheduler.py ``flat_cosine_schedule``."""
    if current_iter <= warmup_iter:
        return init_lr * (current_iter / float(warmup_iter)) ** 2
    elif warmup_iter < current_iter <= flat_iter:
        return init_lr
    elif current_iter >= total_iter - no_aug_iter:
        return min_lr
    else:
        cosine_decay = 0.5 * (
            1 + math.cos(math.pi * (current_iter - flat_iter) / (total_iter - flat_iter - no_aug_iter))
        )
        return min_lr + (init_lr - min_lr) * cosine_decay


# --- MAL --------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("gamma", "mal_alpha", "seed"), [(1.5, None, 0), (2.0, None, 1), (1.5, 0.25, 2)])
def test_mal_equals_deim_for_every_term(gamma: float, mal_alpha: float | None, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    outputs, targets = _random_outputs(gen), _targets(gen)
    spec = {"preset": "s", "loss_types": ["mal", "boxes"], "mal_gamma": gamma, "mal_alpha": mal_alpha}
    criterion = build_criterion({**spec, "mal_loss_coef": 0.7}, num_classes=C)
    ours = criterion(outputs, targets)
    num_boxes = float(sum(len(t["labels"]) for t in targets))
    heads = {"": outputs} | {f"_aux_{i}": a for i, a in enumerate(outputs["aux_outputs"])}
    heads |= {f"_enc_{i}": a for i, a in enumerate(outputs["enc_aux_outputs"])}
    expected = {}
    for suffix, head in heads.items():  # the same matching: the criterion's own matcher, layer by layer
        indices = criterion.matcher(head, targets)
        expected[f"loss_mal{suffix}"] = _deim_loss_labels_mal(head, targets, indices, num_boxes, C, gamma, mal_alpha)
    dn_indices = _denoising_indices(outputs["dn_meta"], targets)
    dn_boxes = num_boxes * outputs["dn_meta"]["dn_num_group"]
    for i, head in enumerate(outputs["dn_aux_outputs"]):
        expected[f"loss_mal_dn_{i}"] = _deim_loss_labels_mal(head, targets, dn_indices, dn_boxes, C, gamma, mal_alpha)
    assert {k for k in ours if k.startswith("loss_mal")} == set(expected)
    assert not any(k.startswith("loss_vfl") for k in ours) and "loss_bbox_dn_2" in ours
    for key, value in expected.items():
        assert value.dtype == torch.float64
        torch.testing.assert_close(ours[key], 0.7 * value, rtol=1e-12, atol=1e-14, msg=key)
    grads = torch.autograd.grad(ours["loss_mal"], outputs["pred_logits"])[0]
    reference = torch.autograd.grad(0.7 * expected["loss_mal"], outputs["pred_logits"])[0]
    torch.testing.assert_close(grads, reference, rtol=1e-12, atol=1e-14)


def test_mal_differs_from_vfl_and_gamma_matters() -> None:
    gen = torch.Generator().manual_seed(5)
    outputs, targets = _random_outputs(gen), _targets(gen)
    mal = build_criterion({"preset": "s"}, C, loss_types=["mal", "boxes"])(outputs, targets)["loss_mal"]
    mal2 = build_criterion({"preset": "s", "mal_gamma": 2.5}, C, loss_types=["mal"])(outputs, targets)["loss_mal"]
    vfl = build_criterion({"preset": "s"}, C)(outputs, targets)["loss_vfl"]
    assert len({mal.item(), mal2.item(), vfl.item()}) == 3


# --- FlatCosine ---------------------------------------------------------------------------------------------------


def test_flat_cosine_equals_deim_at_every_epoch_of_deim_r18() -> None:
    """deim_r18vd_120e_coco.yml: 120 epochs, flat_epoch 64, no_aug_epoch 3, lr 2e-4, rt_deim.yml lr_gamma 0.5,
    warmup_iter 2000; COCO train2017 at total batch 16: 7329 iterations per epoch."""
    spec = load_spec(None, ["train.recipe=deim", "model.preset=s", "train.optim.warmup_steps=2000"]).spec
    recipe, optim = spec.recipe, spec.train.optim
    assert (spec.train.num_epochs, recipe.flat_epochs, recipe.no_aug_epochs) == (120, 64, 3)
    assert (recipe.lr_scheduler, optim.min_lr_factor) == ("FlatCosine", 0.5)
    per_epoch = 7329
    ours = LRSchedule(
        recipe.lr_scheduler,
        warmup_steps=optim.warmup_steps,
        steps_per_epoch=per_epoch,
        num_epochs=spec.train.num_epochs,
        flat_epochs=recipe.flat_epochs,
        no_aug_epochs=recipe.no_aug_epochs,
        min_factor=optim.min_lr_factor,
    )
    base = [2e-4, 1e-4]
    optimizer = torch.optim.AdamW([{"params": [torch.zeros(1)], "lr": lr} for lr in base])
    total, flat, no_aug = per_epoch * 120, per_epoch * 64, per_epoch * 3
    checked = set()
    for epoch in range(120):
        for step in (epoch * per_epoch, epoch * per_epoch + 1234, (epoch + 1) * per_epoch - 1):
            ours.apply(optimizer, epoch, step)
            for group, lr in zip(optimizer.param_groups, base, strict=True):
                theirs = _deim_flat_cosine_schedule(total, 2000, flat, no_aug, step, lr, lr * 0.5)
                assert group["lr"] == pytest.approx(theirs, rel=1e-12, abs=1e-20), (epoch, step)
                checked.add(round(theirs / lr, 6))
    assert {0.0, 1.0, 0.5} <= checked and len(checked) > 50  # warm-up, flat, cosine and floor all visited


# --- Dense O2O ----------------------------------------------------------------------------------------------------


@st.composite
def _samples(draw):
    samples = []
    for _ in range(4):
        w, h = draw(st.integers(8, 120)), draw(st.integers(8, 120))
        n = draw(st.integers(0, 4))
        boxes = []
        for _ in range(n):
            x1, y1 = draw(st.floats(0, w - 2)), draw(st.floats(0, h - 2))
            x2, y2 = draw(st.floats(x1 + 1, w)), draw(st.floats(y1 + 1, h))
            boxes.append([x1, y1, x2, y2])
        boxes_t = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        samples.append((Image.new("RGB", (w, h), (10, 20, 30)), boxes_t, torch.arange(n)))
    return samples, draw(st.integers(8, 64))


@settings(max_examples=60, deadline=None)
@given(_samples())
def test_mosaic_boxes_stay_in_their_tile_and_keep_their_area(case) -> None:
    samples, tile = case
    canvas, boxes, labels, owner = mosaic_tiles(samples, tile)
    sizes = []
    for image, _, _ in samples:  # torchvision's Resize(tile): shorter side = tile, longer scaled and truncated
        short, long = sorted((image.width, image.height))
        other = int(tile * long / short)
        sizes.append((tile, other) if image.width <= image.height else (other, tile))
    width, height = max(s[0] for s in sizes), max(s[1] for s in sizes)
    assert canvas.size == (2 * width, 2 * height)
    assert torch.equal(labels, torch.cat([s[2] for s in samples]))
    assert torch.equal(owner, torch.cat([torch.full((len(s[2]),), i) for i, s in enumerate(samples)]))
    start = 0
    for i, ((image, original, _), (tw, th)) in enumerate(zip(samples, sizes, strict=True)):
        x0, y0 = (i % 2) * width, (i // 2) * height
        mine = boxes[start : start + len(original)].double()
        start += len(original)
        assert (mine[:, [0, 2]] >= x0 - 1e-4).all() and (mine[:, [0, 2]] <= x0 + tw + 1e-4).all()
        assert (mine[:, [1, 3]] >= y0 - 1e-4).all() and (mine[:, [1, 3]] <= y0 + th + 1e-4).all()
        sx, sy = tw / image.width, th / image.height
        area = (mine[:, 2] - mine[:, 0]) * (mine[:, 3] - mine[:, 1])
        o = original.double()
        expected = (o[:, 2] - o[:, 0]) * sx * (o[:, 3] - o[:, 1]) * sy
        torch.testing.assert_close(area, expected, rtol=1e-4, atol=1e-3)
        # exact up to float32 rounding of coordinates on a canvas of up to ~2000 px
        scaled = o * torch.tensor([sx, sy, sx, sy])
        torch.testing.assert_close(mine - torch.tensor([x0, y0, x0, y0]), scaled, rtol=1e-6, atol=2.5e-4)
    assert start == len(boxes)
    # the tiles are pasted where the boxes say: a tile's pixel is its image's colour, the gap is black
    if sizes[0][0] < width:
        assert canvas.getpixel((width - 1, 0)) == (0, 0, 0)
    assert canvas.getpixel((0, 0)) == (10, 20, 30)


def test_mixup_blends_rolled_batch_and_keeps_both_boxes() -> None:
    images = torch.rand(3, 3, 8, 8)
    targets = [{"boxes": torch.rand(n, 4), "labels": torch.arange(n), "image_id": i} for i, n in enumerate((2, 0, 1))]
    mixed, out = mixup(images, targets, random.Random(7))
    beta = round(random.Random(7).uniform(0.45, 0.55), 6)
    torch.testing.assert_close(mixed[0], images[0] * beta + images[2] * (1 - beta))
    torch.testing.assert_close(mixed[1], images[1] * beta + images[0] * (1 - beta))
    assert [len(t["labels"]) for t in out] == [3, 2, 1] and out[1]["image_id"] == 1
    assert torch.equal(out[0]["boxes"], torch.cat([targets[0]["boxes"], targets[2]["boxes"]]))
    assert len(targets[0]["labels"]) == 2  # the inputs are not modified


def test_train_transform_mosaic_output_is_valid() -> None:
    aug = load_spec(None, ["dataset.augmentation.train_spatial_size=[64,64]"]).spec.dataset.augmentation
    samples = [
        (
            Image.new("RGB", (40 + 8 * i, 48), (50 * i, 80, 120)),
            torch.tensor([[4.0, 6.0, 30.0, 40.0]]),
            torch.tensor([i]),
        )
        for i in range(4)
    ]
    torch.manual_seed(0)
    image, boxes, labels = TrainTransform(aug)(*samples[0], strong=True, mosaic_with=samples[1:])
    assert image.shape == (3, 64, 64) and len(boxes) == len(labels) >= 1
    assert ((boxes >= 0) & (boxes <= 1)).all() and set(labels.tolist()) <= {0, 1, 2, 3}


def test_dense_o2o_windows() -> None:
    dense = DenseO2O(0.5, (2, 5), 0.5, (3, 4))
    assert dense.strong_start == 2 and DenseO2O().strong_start == 0
    assert [dense.mosaic_now(e) for e in range(6)] == [False, False, True, True, True, False]
    assert [dense.mixup_now(e) for e in range(6)] == [False, False, False, True, False, False]
    assert not DenseO2O(0.0, (0, 9)).mosaic_now(1)


# --- the recipe -------------------------------------------------------------------------------------------------


def test_rtdetrv2_recipe_keeps_the_previous_defaults() -> None:
    spec = load_spec(None, ["train.num_epochs=72"]).spec
    recipe = spec.recipe
    assert spec.train.recipe == "rtdetrv2" and spec.train.num_epochs == 72
    assert recipe.loss_types == ("vfl", "boxes") and recipe.lr_scheduler == "MultiStep"
    assert recipe.aug_stop_epoch == 70 and recipe.mosaic_prob == 0.0 and recipe.mixup_prob == 0.0
    assert ModelSpec().loss_types is None  # null: the recipe's


@pytest.mark.parametrize(
    ("preset", "epochs", "stages"),
    [("s", 120, (4, 64, 117)), ("m", 120, (4, 64, 117)), ("l", 60, (4, 34, 58)), ("x", 60, (4, 34, 58))],
)
def test_deim_recipe_uses_deims_config_per_preset(preset: str, epochs: int, stages: tuple) -> None:
    spec = load_spec(None, ["train.recipe=deim", f"model.preset={preset}"]).spec
    recipe = spec.recipe
    assert spec.train.num_epochs == epochs
    assert (recipe.mosaic_epochs[0], recipe.flat_epochs, recipe.aug_stop_epoch) == stages
    assert recipe.mosaic_epochs == recipe.mixup_epochs == (stages[0], stages[1])
    assert (recipe.mosaic_prob, recipe.mixup_prob, recipe.loss_types) == (0.5, 0.5, ("mal", "boxes"))


def test_deim_recipe_scales_to_other_epochs_and_every_key_overrides() -> None:
    spec = load_spec(None, ["train.recipe=deim", "model.preset=s", "train.num_epochs=20"]).spec
    assert spec.train.num_epochs == 20
    assert (spec.recipe.mosaic_epochs, spec.recipe.flat_epochs, spec.recipe.aug_stop_epoch) == ((1, 11), 11, 19)
    overrides = [
        "train.recipe=deim",
        "train.num_epochs=30",
        "model.loss_types=[vfl,boxes]",
        "train.optim.lr_scheduler=MultiStep",
        "train.optim.flat_epochs=7",
        "dataset.augmentation.stop_epoch=25",
        "dataset.augmentation.mosaic_prob=0.2",
        "dataset.augmentation.mosaic_epochs=[2,9]",
        "dataset.augmentation.mixup_prob=0.1",
        "dataset.augmentation.mixup_epochs=[3,8]",
    ]
    recipe = load_spec(None, overrides).spec.recipe
    assert recipe.loss_types == ("vfl", "boxes") and recipe.lr_scheduler == "MultiStep"
    assert (recipe.flat_epochs, recipe.aug_stop_epoch, recipe.no_aug_epochs) == (7, 25, 5)
    assert (recipe.mosaic_prob, recipe.mosaic_epochs, recipe.mixup_prob, recipe.mixup_epochs) == (
        0.2,
        (2, 9),
        0.1,
        (3, 8),
    )
    on_v2 = load_spec(None, ["dataset.augmentation.mosaic_prob=0.3", "train.optim.lr_scheduler=FlatCosine"]).spec
    assert on_v2.recipe.mosaic_prob == 0.3 and on_v2.recipe.lr_scheduler == "FlatCosine"


def test_recipe_key_errors() -> None:
    from rtdetr_tao.errors import SpecError

    with pytest.raises(SpecError, match="mosaic_epochs"):
        load_spec(None, ["dataset.augmentation.mosaic_epochs=[5,2]"])
    with pytest.raises(SpecError, match="recipe"):
        load_spec(None, ["train.recipe=dfine"])


def test_recipe_keys_are_searchable_by_automl() -> None:
    import json
    from pathlib import Path

    import optuna

    from rtdetr_tao.automl.space import build_space, sample_overrides
    from rtdetr_tao.config.experiment import get_path

    schema = json.loads((Path(__file__).resolve().parents[1] / "schemas" / "train.schema.json").read_text())
    base = load_spec(None, ["model.preset=s", "train.num_epochs=20"]).spec
    keys = [
        "train.recipe",
        "dataset.augmentation.mosaic_prob",
        "dataset.augmentation.mixup_prob",
        "model.mal_gamma",
        "train.optim.min_lr_factor",
        "train.optim.flat_epochs",
    ]
    params = build_space(schema, keys, {"train.optim.flat_epochs": [0, 30]}, lambda k: get_path(base, k))
    assert {p.key: p.kind for p in params}["train.recipe"] == "choice"
    seen = set()
    for seed in range(8):
        trial = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed)).ask()
        overrides = sample_overrides(params, trial, {"train.num_epochs": 20})
        spec = load_spec(None, ["model.preset=s", "train.num_epochs=20", *(f"{k}={v}" for k, v in overrides.items())])
        recipe = spec.spec.recipe
        assert recipe.mosaic_prob == overrides["dataset.augmentation.mosaic_prob"]
        assert recipe.flat_epochs == overrides["train.optim.flat_epochs"] < 20
        seen.add(recipe.name)
    assert seen == {"rtdetrv2", "deim"}
