"""Data loaders whose order and augmentation are functions of (seed, epoch, batch), sharded over ranks.

``set_epoch(epoch, start_batch)`` picks the epoch's permutation and skips the batches a resumed run has already
trained on, so a run killed mid-epoch continues with exactly the batches the uninterrupted run would have seen.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset

from ..config.dataset import DatasetSpec, InferSource, resolve_batch_size
from ..errors import DataError, RTDETRError, SpecError
from .categories import CategoryMap
from .coco import CocoDetection
from .preprocess import load_rgb, named_images, to_model_input
from .transforms import DenseO2O, mixup, multi_scale_resize, scale_choices

log = logging.getLogger(__name__)


def batch_size_of(dataset_spec: DatasetSpec) -> int:
    """``dataset.batch_size`` under the spec's one rule for -1."""
    return resolve_batch_size(dataset_spec.batch_size)


class ShardedBatchSampler:
    """Batches of ``(index, epoch, batch)`` keys for one rank.

    Training (``shuffle``): a permutation seeded by (seed, epoch), the first ``n - n % world_size`` indices dealt
    round-robin to the ranks, full batches only. Evaluation: every index once, in order, dealt round-robin.
    """

    def __init__(
        self, size: int, batch_size: int, *, shuffle: bool, seed: int = 0, world_size: int = 1, rank: int = 0
    ) -> None:
        self.size, self.batch_size, self.shuffle, self.seed = size, batch_size, shuffle, seed
        self.world_size, self.rank = world_size, rank
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def _indices(self) -> list[int]:
        if not self.shuffle:
            return list(range(self.rank, self.size, self.world_size))
        order = torch.randperm(self.size, generator=torch.Generator().manual_seed(self.seed * 100_003 + self.epoch))
        usable = self.size - self.size % self.world_size
        return order[:usable][self.rank :: self.world_size].tolist()

    def __len__(self) -> int:
        count = len(self._indices())
        return count // self.batch_size if self.shuffle else -(-count // self.batch_size)

    def __iter__(self) -> Iterator[list[tuple[int, int, int]]]:
        indices = self._indices()
        for batch in range(self.start_batch, len(self)):
            chunk = indices[batch * self.batch_size : (batch + 1) * self.batch_size]
            yield [(index, self.epoch, batch) for index in chunk]


class _Failed:
    """A user error raised while loading a sample, carried to the main process as the batch itself: DataLoader
    workers would otherwise re-raise it there as a multi-line "Caught DataError in DataLoader worker process 0"."""

    def __init__(self, error: RTDETRError) -> None:
        self.error = error


class _Guarded(Dataset):
    """``dataset`` whose user errors become :class:`_Failed` samples (see :class:`EpochLoader`)."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def __getitem__(self, key: Any) -> Any:
        try:
            return self.dataset[key]
        except RTDETRError as error:
            return _Failed(error)


class Collate:
    """Stacks images, keeps targets as a list, drops skipped samples, applies DEIM's mixup (when ``dense_o2o``
    says so) and the multi-scale resize, both drawn from a generator seeded by (seed, epoch, batch)."""

    def __init__(
        self,
        scales: list[tuple[int, int]] | None = None,
        stop_epoch: int = 0,
        seed: int = 0,
        dense_o2o: DenseO2O | None = None,
    ) -> None:
        self.scales, self.stop_epoch, self.seed = scales, stop_epoch, seed
        self.dense_o2o = dense_o2o or DenseO2O()

    def __call__(self, samples: list[Any]) -> tuple[Tensor, list[dict[str, Any]]] | _Failed:
        failed = next((s for s in samples if isinstance(s, _Failed)), None)
        if failed is not None:
            return failed
        samples = [s for s in samples if s is not None]
        if not samples:
            return torch.zeros(0, 3, 1, 1), []
        images = torch.stack([s[0] for s in samples])
        targets = [s[1] for s in samples]
        _, epoch, batch = samples[0][2]
        rng = random.Random(hash((self.seed, epoch, batch)))
        if self.dense_o2o.mixup_now(epoch) and rng.random() < self.dense_o2o.mixup_prob:
            images, targets = mixup(images, targets, rng)
        if self.scales and epoch < self.stop_epoch:
            images = multi_scale_resize(images, self.scales, rng)
        return images, targets


class EpochLoader:
    """Iterates ``(images [B, 3, H, W], targets)`` of the current epoch; see :class:`ShardedBatchSampler`.

    A user error (:class:`~rtdetr_tao.errors.RTDETRError`) raised while loading a sample is re-raised here as it
    was raised, also when it happened in a worker process."""

    def __init__(self, dataset: Dataset, sampler: ShardedBatchSampler, collate: Collate, workers: int, pin: bool):
        self.dataset, self.sampler, self.pin_memory = dataset, sampler, pin
        self.loader = DataLoader(
            _Guarded(dataset),
            batch_sampler=sampler,
            collate_fn=collate,
            num_workers=workers,
            persistent_workers=workers > 0,
            pin_memory=pin and torch.cuda.is_available(),
        )

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.sampler.set_epoch(epoch, start_batch)

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self) -> Iterator[tuple[Tensor, list[dict[str, Any]]]]:
        for batch in self.loader:
            if isinstance(batch, _Failed):
                raise batch.error
            yield batch


def build_train_loader(
    dataset_spec: DatasetSpec,
    *,
    num_epochs: int,
    stop_epoch: int,
    seed: int,
    world_size: int = 1,
    rank: int = 0,
    category_map: CategoryMap,
    dense_o2o: DenseO2O | None = None,
) -> EpochLoader:
    """The training loader over all ``train_data_sources`` (concatenated), augmented as ``dataset.augmentation``
    says; strong augmentation and multi-scale stop at ``stop_epoch``; ``dense_o2o``: DEIM's mosaic and mixup."""
    if not dataset_spec.train_data_sources:
        raise SpecError("dataset.train_data_sources is empty; give at least one {image_dir, json_file}")
    aug = dataset_spec.augmentation
    parts = [
        CocoDetection(
            source,
            category_map,
            train_aug=aug,
            stop_epoch=stop_epoch,
            seed=seed,
            skip_corrupt=dataset_spec.skip_corrupt_images,
            cache_dir=dataset_spec.cache_dir,
            dense_o2o=dense_o2o,
        )
        for source in dataset_spec.train_data_sources
    ]
    dataset = parts[0] if len(parts) == 1 else _Concat(parts)
    batch = batch_size_of(dataset_spec)
    sampler = ShardedBatchSampler(len(dataset), batch, shuffle=True, seed=seed, world_size=world_size, rank=rank)
    if len(sampler) == 0:
        raise DataError(
            f"{len(dataset)} training images give no full batch of {batch} per process ({world_size} processes); "
            "lower dataset.batch_size or add images"
        )
    collate = Collate(scale_choices(aug.multi_scales) or None, stop_epoch, seed, dense_o2o)
    return EpochLoader(dataset, sampler, collate, dataset_spec.workers, dataset_spec.pin_memory)


def build_eval_loader(
    dataset_spec: DatasetSpec, split: str, *, category_map: CategoryMap, world_size: int = 1, rank: int = 0
) -> tuple[EpochLoader, Any]:
    """(loader over this rank's share of the ``val`` or ``test`` source, the pycocotools COCO ground truth)."""
    source = {"val": dataset_spec.val_data_sources, "test": dataset_spec.test_data_sources}[split]
    if source is None:
        raise SpecError(f"dataset.{split}_data_sources is not set; give {{image_dir, json_file}}")
    aug = dataset_spec.augmentation
    dataset = CocoDetection(
        source,
        category_map,
        eval_size=tuple(aug.eval_spatial_size),
        preserve_aspect_ratio=aug.preserve_aspect_ratio,
        skip_corrupt=dataset_spec.skip_corrupt_images,
        cache_dir=dataset_spec.cache_dir,
    )
    sampler = ShardedBatchSampler(
        len(dataset), batch_size_of(dataset_spec), shuffle=False, world_size=world_size, rank=rank
    )
    loader = EpochLoader(dataset, sampler, Collate(), dataset_spec.workers, dataset_spec.pin_memory)
    return loader, dataset.coco


class _Concat(Dataset):
    """Several datasets, indexed one after the other, keeping the (index, epoch, batch) keys."""

    def __init__(self, parts: Sequence[CocoDetection]) -> None:
        self.parts = list(parts)
        self.offsets = [0]
        for part in self.parts:
            self.offsets.append(self.offsets[-1] + len(part))
        self.coco = None

    def __len__(self) -> int:
        return self.offsets[-1]

    def __getitem__(self, key: tuple[int, int, int]) -> Any:
        index, epoch, batch = key
        part = next(i for i in range(len(self.parts)) if index < self.offsets[i + 1])
        return self.parts[part][(index - self.offsets[part], epoch, batch)]


class ImageFolder(Dataset):
    """Images for inference: ``(image [3, H, W], {"path", "name", "orig_size" (w, h), "letterbox"?})`` of
    (path, name relative to its folder) pairs; unreadable images are logged by name and skipped."""

    def __init__(self, named: list[tuple[Path, str]], input_size: tuple[int, int], preserve_aspect_ratio: bool) -> None:
        self.named, self.input_size, self.preserve_aspect_ratio = named, input_size, preserve_aspect_ratio

    def __len__(self) -> int:
        return len(self.named)

    def __getitem__(self, key: tuple[int, int, int]) -> tuple[Tensor, dict[str, Any], tuple[int, int, int]] | None:
        path, name = self.named[key[0]]
        try:
            image = load_rgb(path)
        except DataError as error:  # one bad file must not stop a folder of inference images
            log.warning("skipping %s", error)
            return None
        array, letterbox = to_model_input(image, self.input_size, self.preserve_aspect_ratio)
        meta: dict[str, Any] = {"path": path, "name": name, "orig_size": image.size, "image_id": key[0]}
        if letterbox is not None:
            meta["letterbox"] = letterbox
        return torch.from_numpy(array), meta, key


def build_infer_loader(
    source: InferSource,
    *,
    input_size: tuple[int, int],
    preserve_aspect_ratio: bool = False,
    batch_size: int = 1,
    workers: int = 0,
    cache_dir: str | None = None,
) -> EpochLoader:
    """Every image of ``source.image_dir`` (image files, folders, archives, s3://), in order, as
    ``(images, metas)``."""
    named = named_images(source.image_dir, cache_dir)
    if not named:
        raise DataError(f"no images found in {source.image_dir}")
    sampler = ShardedBatchSampler(len(named), batch_size, shuffle=False)
    return EpochLoader(ImageFolder(named, input_size, preserve_aspect_ratio), sampler, Collate(), workers, False)
