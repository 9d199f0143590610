"""Engine pieces on toy models: schedule, parameter groups, EMA, checkpoints, launch plans, and the loop's resume."""

from __future__ import annotations

import os
import sys
import typing

import pytest
import torch
from torch import nn

from rtdetr_tao.config.train import METRIC_GOALS, Monitor
from rtdetr_tao.engine.checkpoint import (
    LATEST,
    checkpoint_name,
    find_latest,
    load_checkpoint,
    point_latest,
    save_checkpoint,
)
from rtdetr_tao.engine.distributed import plan_launch, torchrun_command
from rtdetr_tao.engine.ema import ModelEMA
from rtdetr_tao.engine.hooks import (
    BestCheckpointHook,
    CheckpointHook,
    EarlyStoppingHook,
    best_monitored,
    training_hooks,
)
from rtdetr_tao.engine.optim import LRSchedule, build_optimizer, freeze_modules, loss_groups, param_groups
from rtdetr_tao.engine.trainer import Hook, Trainer
from rtdetr_tao.errors import CheckpointError, DistributedError, TrainingError


def test_multistep_matches_torch_and_reference_warmup():
    schedule = LRSchedule("MultiStep", milestones=(2, 4), decay=0.1, warmup_steps=5)
    param = nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=1.0)
    torch_sched = torch.optim.lr_scheduler.MultiStepLR(opt, milestones=[2, 4], gamma=0.1)
    for epoch in range(6):
        assert schedule.factor(epoch, 10_000) == pytest.approx(opt.param_groups[0]["lr"])
        opt.step()
        torch_sched.step()
    # LinearWarmup of the reference: min(1, (step + 1) / duration)
    assert [schedule.factor(0, s) for s in range(6)] == pytest.approx([0.2, 0.4, 0.6, 0.8, 1.0, 1.0])
    assert LRSchedule("StepLR", step_size=3, decay=0.5).factor(7, 0) == 0.25


def test_schedule_apply_keeps_base_lrs():
    a, b = nn.Parameter(torch.zeros(2, 2)), nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [a], "lr": 1e-3}, {"params": [b], "lr": 1e-4}], lr=1e-3)
    schedule = LRSchedule("MultiStep", milestones=(1,), decay=0.1)
    schedule.apply(opt, 1, 0)
    schedule.apply(opt, 1, 1)  # applying twice does not compound
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([1e-4, 1e-5])


class Toy(nn.Module):
    def __init__(self):
        super().__init__()
        self.backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4))
        self.decoder = nn.Linear(4, 2)
        self.decoder.sampling_offsets = nn.Linear(2, 2)


def test_param_groups_split_backbone_and_no_decay():
    model = Toy()
    groups = {
        g["name"]: g
        for g in param_groups(
            model,
            lr=1e-4,
            lr_backbone=1e-5,
            weight_decay=1e-4,
            linear_proj_names=["sampling_offsets"],
            linear_proj_mult=0.1,
        )
    }
    assert set(groups) == {
        "backbone",
        "backbone_no_decay",
        "detector",
        "detector_no_decay",
        "linear_proj",
        "linear_proj_no_decay",
    }
    assert groups["backbone"]["lr"] == 1e-5 and groups["backbone"]["weight_decay"] == 1e-4
    assert groups["backbone_no_decay"]["weight_decay"] == 0.0  # BN weights/biases and conv bias
    assert groups["linear_proj"]["lr"] == pytest.approx(1e-5)
    assert sum(len(g["params"]) for g in groups.values()) == len(list(model.parameters()))


def test_only_a_loss_that_learns_gets_a_group():
    class Projections(nn.Module):
        def __init__(self):
            super().__init__()
            self.proj = nn.Linear(2, 3)
            self.frozen = nn.Linear(2, 2).requires_grad_(False)

    loss = Projections()
    (group,) = loss_groups(loss, lr=0.1, weight_decay=0.01)
    assert group["name"] == "loss" and group["lr"] == 0.1 and group["weight_decay"] == 0.01
    assert group["params"] == [loss.proj.weight, loss.proj.bias]
    assert loss_groups(lambda *a: {}, lr=0.1, weight_decay=0.01) == []
    assert loss_groups(nn.ReLU(), lr=0.1, weight_decay=0.01) == []


def test_freeze_reports_unknown_prefixes():
    model = Toy()
    assert freeze_modules(model, ["backbone", "neck"]) == ["neck"]
    assert not any(p.requires_grad for p in model.backbone.parameters())
    assert all(p.requires_grad for p in model.decoder.parameters())
    groups = param_groups(model, lr=1e-4, lr_backbone=1e-5, weight_decay=0.0)
    assert not any(g["name"].startswith("backbone") for g in groups)


def test_ema_decay_warmup_and_average():
    model = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(model.weight)
    ema = ModelEMA(model, decay=0.9, warmup_steps=10)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)
    d = 0.9 * (1 - torch.exp(torch.tensor(-0.1))).item()
    assert ema.module.weight.item() == pytest.approx(1 - d)
    state = ema.state_dict()
    other = ModelEMA(nn.Linear(1, 1, bias=False), decay=0.9, warmup_steps=10)
    other.load_state_dict(state)
    assert other.updates == 1 and other.module.weight.item() == pytest.approx(1 - d)


def test_checkpoint_roundtrip_latest_and_safety(tmp_path):
    path = save_checkpoint(tmp_path / checkpoint_name(3), {"model": {"w": torch.ones(2)}, "epoch": 3})
    assert (
        path.name == "model_epoch_003.pth"
        and checkpoint_name(3, 120, ema=True) == "model_epoch_003_step_0000120-EMA.pth"
    )
    point_latest(tmp_path, path)
    assert os.readlink(tmp_path / LATEST) == "model_epoch_003.pth" and find_latest(tmp_path) == path.resolve()
    state = load_checkpoint(tmp_path / LATEST)
    assert state["format"] == "rtdetr_tao" and state["epoch"] == 3 and torch.equal(state["model"]["w"], torch.ones(2))
    assert not list(tmp_path.glob(".*tmp"))  # no temporary files left behind

    truncated = tmp_path / "bad.pth"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*bad.pth"):
        load_checkpoint(truncated)
    torch.save({"model": {}}, tmp_path / "foreign.pth")
    with pytest.raises(CheckpointError, match="not an rtdetr_tao training checkpoint"):
        load_checkpoint(tmp_path / "foreign.pth")

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    torch.save({"format": "rtdetr_tao", "x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(tmp_path / "evil.pth")  # weights_only refuses arbitrary pickles


def test_failed_save_keeps_previous_file(tmp_path):
    path = save_checkpoint(tmp_path / "a.pth", {"v": torch.zeros(1)})
    before = path.read_bytes()

    class Boom:
        def __reduce__(self):
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"v": Boom()})
    assert path.read_bytes() == before and not list(tmp_path.glob(".*tmp"))


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ((1, [0], 1), {}, None),
        ((2, [0, 1], 1), {}, (1, 2, 0, "127.0.0.1", 29500)),
        ((2, [2, 3], 1), {"LOCAL_RANK": "0"}, None),  # already a torchrun worker
        ((1, [0], 1), {"WORLD_SIZE": "2", "NODE_RANK": "1", "MASTER_ADDR": "10.0.0.1"}, (2, 1, 1, "10.0.0.1", 29500)),
        (
            (8, list(range(8)), 1),
            {"WORLD_SIZE": "4", "RANK": "3", "MASTER_ADDR": "h", "MASTER_PORT": "1234", "NUM_GPU_PER_NODE": "2"},
            (4, 2, 3, "h", 1234),
        ),
    ],
)
def test_launch_plan_follows_tao_environment(args, env, expected):
    plan = plan_launch(*args, env, use_cuda=False)
    got = (
        None if plan is None else (plan.nnodes, plan.nproc_per_node, plan.node_rank, plan.master_addr, plan.master_port)
    )
    assert got == expected


def test_multinode_needs_master_addr_and_command_is_a_list():
    with pytest.raises(DistributedError, match="MASTER_ADDR"):
        plan_launch(1, [0], 2, {}, use_cuda=False)
    plan = plan_launch(2, [3, 5], 1, {}, use_cuda=True)
    assert plan.visible_devices == "3,5"
    command = torchrun_command(plan, ["train", "-e", "spec with space.yaml", "a.b=1"])
    assert command[:3] == [sys.executable, "-m", "torch.distributed.run"]
    assert command[-5:] == ["rtdetr_tao.cli", "train", "-e", "spec with space.yaml", "a.b=1"]


# --- the loop ------------------------------------------------------------------------------------


class ToyLoader:
    """Deterministic data per (epoch, batch): what the real loader guarantees."""

    def __init__(self, n: int = 5):
        self.n, self.epoch, self.start = n, 0, 0

    def set_epoch(self, epoch, start_batch=0):
        self.epoch, self.start = epoch, start_batch

    def __len__(self):
        return self.n

    def __iter__(self):
        for i in range(self.start, self.n):
            g = torch.Generator().manual_seed(self.epoch * 100 + i)
            x = torch.randn(4, 3, generator=g)
            yield x, [{"y": x.sum(1, keepdim=True)}]


def toy_loss(model, images, targets, autocast):
    with autocast():
        out = model(images + 0.01 * torch.randn_like(images))  # uses the seeded step RNG
    return {"mse": ((out - targets[0]["y"]) ** 2).mean()}


def make_trainer(directory, num_epochs=3, hooks_for=None, checkpoint_every=4):
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    optimizer = build_optimizer(
        "AdamW", param_groups(model, lr=1e-2, lr_backbone=1e-2, weight_decay=1e-4), lr=1e-2, momentum=0.9
    )
    trainer = Trainer(
        model=model,
        loss_fn=toy_loss,
        optimizer=optimizer,
        schedule=LRSchedule("MultiStep", milestones=(2,), warmup_steps=3),
        loader=ToyLoader(),
        device=torch.device("cpu"),
        num_epochs=num_epochs,
        seed=7,
        ema=ModelEMA(model, 0.9, warmup_steps=5),
        clip_grad_norm=0.5,
    )
    if checkpoint_every is not None:
        trainer.register(CheckpointHook(directory, interval=checkpoint_every, unit="step", extra={"spec": {"x": 1}}))
    return trainer


class Kill(Exception):
    pass


class KillAt(Hook):
    def __init__(self, step):
        self.step = step

    def after_step(self):
        if self.trainer.state.global_step == self.step:
            raise Kill()


def test_resume_mid_epoch_gives_identical_weights(tmp_path):
    full = make_trainer(tmp_path / "full")
    full.train()
    reference = {k: v.clone() for k, v in full.model.state_dict().items()}

    broken = make_trainer(tmp_path / "broken")
    broken.register(KillAt(7))  # dies after step 7; the last checkpoint is step 4 (mid-epoch 0)
    with pytest.raises(Kill):
        broken.train()
    latest = find_latest(tmp_path / "broken")
    assert latest.name == "model_epoch_000_step_0000004.pth"

    resumed = make_trainer(tmp_path / "broken")
    state = load_checkpoint(latest)
    resumed.model.load_state_dict(state["model"])
    resumed.load_state_dict(state)
    assert (resumed.state.epoch, resumed.state.step_in_epoch) == (0, 4)
    resumed.train()
    for key, value in resumed.model.state_dict().items():
        assert torch.equal(value, reference[key]), key
    assert torch.equal(resumed.ema.module.weight, full.ema.module.weight)
    assert find_latest(tmp_path / "broken").name == "model_epoch_002.pth"


def test_non_finite_loss_is_a_clear_error(tmp_path):
    trainer = make_trainer(tmp_path)
    trainer.loss_fn = lambda model, images, targets, autocast: {"mse": model(images).sum() * float("nan")}
    with pytest.raises(TrainingError, match=r"loss is nan at epoch 1/\d+, step 0"):
        trainer.train()


# --- hooks with state across a resume --------------------------------------------------------------


class ScriptedValidation(Hook):
    """val_loss per epoch from a script, as the validation hook would store it."""

    def __init__(self, values):
        self.values = values

    def after_epoch(self):
        self.trainer.state.metrics = {"val_loss": self.values[self.trainer.state.epoch]}


class KillAfterEpoch(Hook):
    def __init__(self, epoch):
        self.epoch = epoch

    def after_epoch(self):
        if self.trainer.state.epoch == self.epoch:
            raise Kill()


VAL_LOSS = [1.0, 0.5, 0.7, 0.45, 0.6, 0.55, 0.52, 0.3, 0.2, 0.1]  # best at 3, then 3 without improvement


def hooked_trainer(directory, kill_after=None):
    trainer = make_trainer(directory, num_epochs=len(VAL_LOSS), checkpoint_every=None)
    trainer.register(ScriptedValidation(VAL_LOSS))
    trainer.register(EarlyStoppingHook("val_loss", METRIC_GOALS["val_loss"], patience=3))
    trainer.register(BestCheckpointHook(directory, "val_loss", METRIC_GOALS["val_loss"], extra={}))
    trainer.register(CheckpointHook(directory, interval=1, unit="epoch", extra={}))
    if kill_after is not None:
        trainer.register(KillAfterEpoch(kill_after))
    return trainer


def test_metric_directions_are_declared_for_every_monitor():
    assert set(typing.get_args(Monitor)) == set(METRIC_GOALS)
    assert METRIC_GOALS["val_mAP"] == "maximize" and METRIC_GOALS["train_loss"] == "minimize"


def test_early_stopping_and_best_checkpoint_state_survive_a_resume(tmp_path):
    full = hooked_trainer(tmp_path / "full")
    state = full.train()
    assert state.epoch == 7 and "has not improved on 0.4500 for 3 validations" in state.stop_reason
    assert load_checkpoint(tmp_path / "full" / "model_best.pth")["epoch"] == 3

    broken = hooked_trainer(tmp_path / "broken", kill_after=5)  # after epoch 5: two validations without gain
    with pytest.raises(Kill):
        broken.train()
    best_before = (tmp_path / "broken" / "model_best.pth").stat().st_mtime_ns
    latest = find_latest(tmp_path / "broken")
    assert latest.name == "model_epoch_005.pth"
    saved = load_checkpoint(latest)
    assert saved["hooks"] == {
        "EarlyStoppingHook": {"best": 0.45, "bad_rounds": 2},
        "BestCheckpointHook": {"best": 0.45, "best_epoch": 3},
    }

    resumed = hooked_trainer(tmp_path / "broken")
    resumed.model.load_state_dict(saved["model"])
    resumed.load_state_dict(saved)
    state = resumed.train()
    assert state.epoch == 7 and state.stop_reason == full.state.stop_reason  # stops where the full run stopped
    # epoch 6 (0.52) beats the fresh-start best a forgetful hook would have had, but not 0.45
    assert (tmp_path / "broken" / "model_best.pth").stat().st_mtime_ns == best_before
    assert load_checkpoint(tmp_path / "broken" / "model_best.pth")["epoch"] == 3


def test_hooks_are_registered_once_per_class(tmp_path):
    trainer = make_trainer(tmp_path)
    with pytest.raises(ValueError, match="CheckpointHook is already registered"):
        trainer.register(CheckpointHook(tmp_path, interval=1, unit="epoch", extra={}))


def test_training_hooks_order_and_ranks(tmp_path):
    from rtdetr_tao.engine.hooks import EvalHook, PlotsHook, StatusHook, TensorBoardHook
    from rtdetr_tao.outputs.status import StatusLogger

    common = dict(
        out_dir=tmp_path, status=StatusLogger(tmp_path / "status.json"), monitor="val_mAP", goal="maximize",
        checkpoint_extra={}, checkpoint_interval=1, checkpoint_unit="epoch", early_stopping_patience=3,
    )  # fmt: skip
    validate = lambda model: {}  # noqa: E731
    other = training_hooks(is_main=False, validate=validate, **common)
    assert [type(h) for h in other] == [EvalHook, EarlyStoppingHook]  # files are the main process's
    main = training_hooks(is_main=True, validate=validate, write_report=lambda *a: None, **common)
    names = [type(h).__name__ for h in main]
    assert names[:4] == ["EvalHook", "EarlyStoppingHook", "BestCheckpointHook", "CheckpointHook"]
    assert isinstance(main[-1], PlotsHook) and main[-1].best_hook is main[2]  # the report follows the best epoch
    assert StatusHook in map(type, main) and TensorBoardHook in map(type, main)
    assert "WandBHook" not in names and "ClearMLHook" not in names  # trackers only when their arguments are given
    assert PlotsHook not in map(type, training_hooks(is_main=True, **common))  # no report without a writer
    main[1].best, main[2].best = 0.4, 0.5
    assert best_monitored(main) == 0.4  # early stopping's value, which every rank has
    assert best_monitored(training_hooks(is_main=False, **{**common, "early_stopping_patience": None})) is None


def test_weights_without_classes_take_them_from_all_training_files_before_the_test_file(tmp_path) -> None:
    """Official / Hugging Face weights record no categories: evaluate and export map labels as training does."""
    from test_data import categories_source
    from test_train import TINY_MODEL

    from rtdetr_tao.config import ExperimentSpec
    from rtdetr_tao.engine.restore import load_trained_model
    from rtdetr_tao.model.build import build_model

    spec = ExperimentSpec.model_validate(
        {
            "model": TINY_MODEL,
            "dataset": {
                "num_classes": 2,
                "train_data_sources": [
                    categories_source(tmp_path, "a", {3: "x"}),
                    categories_source(tmp_path, "b", {7: "y"}),
                ],
                "test_data_sources": categories_source(tmp_path, "test", {4: "p", 9: "q"}),
            },
        }
    )
    weights = tmp_path / "official.pth"
    torch.save({"model": build_model(spec.model, 2).state_dict()}, weights)
    trained = load_trained_model(str(weights), spec)
    assert trained.category_map.names_by_category == {3: "x", 7: "y"}
