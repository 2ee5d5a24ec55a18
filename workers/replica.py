"""``SupernetReplica``: one replica of the shared-weight supernet, its optimizer and data.

The replicas of a search form one ``torch.distributed`` group (gloo on CPU, nccl on GPU). In the
shared phase every rank trains the same architecture on its own shard of each global batch;
the gradients of the parameters that architecture used are averaged in one all-reduce, so every
rank takes the same optimizer step and the weights stay identical. BatchNorm running
statistics, which each rank computes from its own shard, are averaged after every chunk of
steps. Scoring needs no communication: each replica scores the architectures it is given.

The class is plain Python; ``workers.actors`` turns it into a Ray actor.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from errors import ConfigError, SegnasError, TrainingDivergedError
from searchspec.spec import SearchSpec
from storage.engine import data_dir
from supernet.data import SegmentationData, load_dataset
from supernet.data.feed import DataFeed
from supernet.metrics import Metrics
from supernet.network import SuperNet
from supernet.scoring import score_architectures
from supernet.space import SearchSpace
from supernet.training import autocast, make_optimizer, segmentation_loss
from workers.schedule import make_shared_scheduler

GROUP_TIMEOUT = timedelta(minutes=10)
MINIBATCH_STREAM = 11
"""Seeds, with the spec's seed and the minibatch number, the draw of a scoring minibatch."""


def free_port() -> int:
    """A TCP port that is free on this node now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("", 0))
        return int(s.getsockname()[1])


def node_address() -> tuple[str, int]:
    """This node's IP (as Ray sees it) and a free port: where rank 0 hosts the group."""
    import ray  # the replica itself runs without Ray in tests; only this helper asks it

    return ray.util.get_node_ip_address(), free_port()


def shard_indices(
    num_items: int, batch_size: int, *, seed: int, epoch: int, step: int, rank: int, world: int
) -> list[int]:
    """This rank's share of global batch ``step`` of ``epoch``.

    Every rank draws the same permutation of the train split from ``(seed, epoch)`` and takes
    every ``world``-th index of the step's global batch, so the shards are disjoint and equal
    in size (``batch_size`` is cut evenly; the remainder of the split is dropped).
    """
    order = np.random.default_rng([seed, epoch]).permutation(num_items)
    batch = order[step * batch_size : (step + 1) * batch_size]
    per_rank = batch_size // world
    return batch[rank::world][:per_rank].tolist()


def scoring_minibatch(num_items: int, batch_size: int, *, seed: int, key: int) -> list[int]:
    """Validation indices of scoring minibatch ``key``: ``batch_size`` of them (all, for a
    smaller split) drawn without replacement from a generator seeded by ``(seed, key)``."""
    rng = np.random.default_rng([seed, MINIBATCH_STREAM, key])
    return np.sort(rng.choice(num_items, min(batch_size, num_items), replace=False)).tolist()


class SupernetReplica:
    """One rank of the supernet group.

    Args:
        spec: the search spec (as a dict: it crosses process boundaries).
        rank: this replica's rank in the group.
        world_size: replicas in the group.
        threads: torch threads (its CPU share: more would only oversubscribe the cores).
    """

    def __init__(self, spec: dict[str, Any], *, rank: int, world_size: int, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        self.spec = SearchSpec.model_validate(spec)
        self.rank, self.world_size = rank, world_size
        self.device = torch.device(
            "cuda"
            if self.spec.resources.gpus_per_replica > 0 and torch.cuda.is_available()
            else "cpu"
        )
        self._group = False
        # A user's mistake (a data set root that does not exist, too few images) is kept and
        # raised by the first call, as a plain error the driver reports in one line; raised
        # here, Ray would log the actor's death with a traceback instead.
        self._error: SegnasError | None = None
        try:
            self._build(rank)
        except SegnasError as e:
            self._error = e

    def _build(self, rank: int) -> None:
        self.data: SegmentationData = load_dataset(self.spec.dataset)
        # Decoded once into the data folder's cache (shared by every replica and search),
        # the validation split held ready on the device, training batches augmented whole.
        self.feed = DataFeed(
            self.data,
            self.device,
            cache_dir=data_dir() / "cache",
            prefetch=self.device.type == "cuda",  # on a CPU the thread would share its cores
        )
        self.space: SearchSpace = self.spec.space.build(
            num_classes=self.data.num_classes, in_channels=self.data.in_channels
        )
        shared = self.spec.shared
        # Same seed on every rank: identical initial weights without a broadcast.
        torch.manual_seed(self.spec.seed)
        self.net = SuperNet(self.space, sharing=shared.sharing).to(self.device)
        self.steps_per_epoch = self._steps_per_epoch()
        self.optimizer = make_optimizer(self.net, shared)
        self.scheduler = make_shared_scheduler(self.optimizer, shared, self.steps_per_epoch)
        # Each rank's own stream for augmentation from here on.
        torch.manual_seed(self.spec.seed * 1_000_003 + rank + 1)
        self._val_order = np.random.default_rng([self.spec.seed, 7]).permutation(len(self.data.val))

    def _steps_per_epoch(self) -> int:
        shared = self.spec.shared
        steps = len(self.data.train) // shared.batch_size
        if steps == 0:
            raise ConfigError(
                f"the train split has {len(self.data.train)} images, fewer than one shared "
                f"batch ({shared.batch_size}): lower shared.batch_size"
            )
        return min(steps, shared.max_steps) if shared.max_steps else steps

    # group

    def _check_ready(self) -> None:
        if self._error is not None:
            raise self._error

    def address(self) -> tuple[str, int]:
        """Where this replica (as rank 0) hosts the group: its node's IP and a free port."""
        self._check_ready()
        return node_address()

    def join_group(self, address: str, port: int) -> None:
        """Join the group hosted at ``address:port`` (blocks until every rank has joined)."""
        self._check_ready()
        if self.world_size == 1:
            return
        backend = "nccl" if self.device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend,
            init_method=f"tcp://{address}:{port}",
            rank=self.rank,
            world_size=self.world_size,
            timeout=GROUP_TIMEOUT,
        )
        self._group = True

    def describe(self) -> dict[str, Any]:
        """What the driver needs to plan the loop."""
        self._check_ready()
        return {
            "steps_per_epoch": self.steps_per_epoch,
            "val_images": len(self.data.val),
            "num_classes": self.data.num_classes,
            "in_channels": self.data.in_channels,
            "device": str(self.device),
        }

    # shared phase

    def train_steps(
        self, epoch: int, first_step: int, archs: Sequence[Sequence[int]]
    ) -> list[float]:
        """Train ``archs[i]`` on step ``first_step + i`` of ``epoch``; the mean loss per step
        over all ranks."""
        shared = self.spec.shared
        self.net.train()
        losses = []
        for offset, arch in enumerate(archs):
            step = first_step + offset
            images, masks = self.feed.train_batch(
                *self._train_ids(epoch, step),
                then=self._train_ids(epoch, step + 1) if offset + 1 < len(archs) else None,
            )
            with autocast(self.device):
                logits = self.net(images, arch)
            loss = segmentation_loss(logits, masks, self.data.ignore_index)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            loss_value = self._average_gradients(loss.detach())
            if not np.isfinite(loss_value):
                raise TrainingDivergedError(
                    f"shared loss became {loss_value} at epoch {epoch}, step {step}: lower "
                    "shared.lr"
                )
            if shared.grad_clip is not None:
                nn.utils.clip_grad_norm_(self._with_grad(), shared.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            losses.append(loss_value)
        self._average_norm_buffers()
        return losses

    def _train_ids(self, epoch: int, step: int) -> tuple[list[int], tuple[int, ...]]:
        """This rank's items of global batch ``step`` of ``epoch``, and the batch's key (its
        augmentation's draws)."""
        ids = shard_indices(
            len(self.data.train),
            self.spec.shared.batch_size,
            seed=self.spec.seed,
            epoch=epoch,
            step=step,
            rank=self.rank,
            world=self.world_size,
        )
        return ids, (self.spec.seed, epoch, step, self.rank)

    def lr(self) -> float:
        return float(self.optimizer.param_groups[0]["lr"])

    def _with_grad(self) -> list[Tensor]:
        return [p for p in self.net.parameters() if p.grad is not None]

    def _average_gradients(self, loss: Tensor) -> float:
        """Average the used parameters' gradients (and the loss) over the group, in place."""
        if not self._group:
            return float(loss)
        # Every rank ran the same architecture, so the same parameters have gradients, in the
        # same order.
        loss = loss.reshape(1).float()
        _all_reduce_mean([p.grad for p in self._with_grad()] + [loss], self.world_size)
        return float(loss)

    def _average_norm_buffers(self) -> None:
        if not self._group:
            return
        buffers = [
            b
            for m in self.net.modules()
            if isinstance(m, nn.modules.batchnorm._BatchNorm)
            for b in (m.running_mean, m.running_var)
            if b is not None
        ]
        _all_reduce_mean(buffers, self.world_size)

    # controller and derive phases

    def val_batches(self, batch_size: int) -> int:
        """Validation minibatches of ``batch_size`` (the last one may be smaller)."""
        return -(-len(self.data.val) // batch_size)

    def score_minibatch(
        self, archs: Sequence[Sequence[int]], key: int, batch_size: int
    ) -> list[dict[str, Any]]:
        """Score every architecture on the same validation minibatch number ``key``.

        Minibatch ``key`` is ``batch_size`` validation images drawn without replacement from a
        generator seeded by ``(seed, key)``: the same images on every replica and every rerun,
        other images for another key, and always a full minibatch (no short tail).
        """
        ids = scoring_minibatch(len(self.data.val), batch_size, seed=self.spec.seed, key=key)
        return self._score(archs, [self.feed.val_batch(ids)], per_arch_batches=False)

    def score_split(
        self, archs: Sequence[Sequence[int]], batch_size: int, max_batches: int | None = None
    ) -> list[dict[str, Any]]:
        """Score each architecture on the validation split (its first ``max_batches``)."""
        count = self.val_batches(batch_size)
        if max_batches is not None:
            count = min(count, max_batches)
        batches = [self._val_batch(b, batch_size) for b in range(count)]
        return self._score(archs, batches, per_arch_batches=False)

    def _score(
        self, archs: Sequence[Sequence[int]], batches: list, *, per_arch_batches: bool
    ) -> list[dict[str, Any]]:
        metrics = score_architectures(
            self.net,
            archs,
            batches,
            num_classes=self.data.num_classes,
            ignore_index=self.data.ignore_index,
            device=self.device,
            per_arch_batches=per_arch_batches,
        )
        return [_scalars(m) for m in metrics]

    def _val_batch(self, index: int, batch_size: int) -> tuple[Tensor, Tensor]:
        index %= self.val_batches(batch_size)
        ids = self._val_order[index * batch_size : (index + 1) * batch_size].tolist()
        return self.feed.val_batch(ids)

    # state

    def state(self) -> dict[str, Any]:
        """Weights, optimizer and schedule (identical on every rank) and this rank's RNG."""
        state: dict[str, Any] = {"rng": self.rng_state()}
        if self.rank == 0:
            state.update(
                supernet=self.net.state_dict(),
                optimizer=self.optimizer.state_dict(),
                scheduler=self.scheduler.state_dict(),
            )
        return state

    def rng_state(self) -> dict[str, Any]:
        rng: dict[str, Any] = {"torch": torch.get_rng_state()}
        if self.device.type == "cuda":
            rng["cuda"] = torch.cuda.get_rng_state(self.device)
        return rng

    def load_state(self, weights: dict[str, Any], rng: dict[str, Any]) -> None:
        """Restore rank 0's weights, optimizer and schedule, and this rank's RNG."""
        self.net.load_state_dict(weights["supernet"])
        self.optimizer.load_state_dict(weights["optimizer"])
        self.scheduler.load_state_dict(weights["scheduler"])
        torch.set_rng_state(rng["torch"])
        if "cuda" in rng and self.device.type == "cuda":
            torch.cuda.set_rng_state(rng["cuda"], self.device)

    def fingerprint(self) -> str:
        """SHA-256 of every parameter and buffer: equal on all ranks iff they are in sync."""
        digest = hashlib.sha256()
        for name, tensor in self.net.state_dict().items():
            digest.update(name.encode())
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()

    def leave_group(self) -> None:
        if self._group:
            dist.destroy_process_group()
            self._group = False


def _all_reduce_mean(tensors: list[Tensor], world_size: int) -> None:
    """Replace each tensor by its mean over the group: one flat buffer, one all-reduce."""
    flat = torch.cat([t.reshape(-1) for t in tensors])
    dist.all_reduce(flat)
    flat /= world_size
    offset = 0
    for t in tensors:
        t.copy_(flat[offset : offset + t.numel()].view_as(t))
        offset += t.numel()


def _scalars(metrics: Metrics) -> dict[str, Any]:
    return metrics.model_dump(exclude={"per_class_iou", "pixels"})
