"""The search driver: the ENAS loop over Ray actors, with persistence, checkpoints and recovery.

Per epoch (DESIGN.md section 4):

1. shared phase: the controller draws one architecture per step; every replica trains it on
   its shard of the step's global batch (gradients all-reduced inside the replica group);
2. controller phase: ``controller_phase.steps`` times, the controller draws a tagged batch,
   the replicas score its architectures in parallel, all on the same validation minibatch
   (drawn afresh for each controller step: common random numbers), the
   rewards go back tagged with sample id and policy version, and the controller updates once
   the batch is complete; every sample is written to the database, one batch per step;
3. a checkpoint (weights, optimizers, controller, RNG states, position), written atomically.

After the last epoch, the derive phase scores ``derive.samples`` architectures from the final
policy (and its greedy choice) on the validation split and keeps the best as the result.

One entry point serves every way of running a search: the CLI, the dispatcher, ``ray submit``.
If a replica dies, the group is rebuilt from the last checkpoint and the rows written after it
are rewound, so the finished search has exactly the rows of an uninterrupted one.

A driver a dispatcher launched has a fence, the lease it runs under: each of its writes checks
it, and once another dispatcher holds the search the write raises ``LeaseLostError`` and the
driver stops, writing nothing more (not even ``failed``: the search is the new driver's).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import ray
from pydantic import BaseModel

from errors import SearchFaultError, SegnasError
from searchspec.spec import SearchSpec
from storage.fencing import Fence, LeaseLostError
from storage.searches import EpochRecord, ResultRecord, SampleRecord, SearchStore
from supernet.metrics import METRIC_NAMES
from workers.checkpoints import SearchCheckpoints
from workers.group import ActorGroup, ReplicaLostError
from workers.runtime import ensure_ray

log = logging.getLogger(__name__)

SHARED_CHUNK = 8  # shared steps per call to the replicas: few round trips, frequent progress
DERIVE_CHUNK = 4  # derive candidates per replica per call


class SearchCancelledError(SegnasError):
    """The search was asked to stop."""


@dataclass(frozen=True)
class SearchProgress:
    """Where the loop is, after every chunk of shared steps and every controller step."""

    search_id: str
    epoch: int
    epochs: int
    phase: str  # shared | controller | derive
    step: int
    steps: int
    samples: int
    best_reward: float | None
    best_arch: tuple[int, ...] | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "epochs": self.epochs,
            "phase": self.phase,
            "step": self.step,
            "steps": self.steps,
            "samples": self.samples,
        }


class SearchOutcome(BaseModel):
    """What a finished search found; the CLI prints it with ``--json``."""

    search_id: str
    status: str
    reward: str
    best_arch: list[int]
    best_reward: float
    metrics: dict[str, float]
    params: int
    candidates: int
    epochs: int
    samples: int
    recoveries: int


@dataclass
class _Best:
    reward: float | None = None
    arch: tuple[int, ...] | None = None

    def offer(self, reward: float, arch: Sequence[int]) -> None:
        if self.reward is None or reward > self.reward:
            self.reward, self.arch = reward, tuple(arch)


class SearchDriver:
    """Runs one search to its end.

    Args:
        spec: the search spec.
        store: the database.
        checkpoint_dir: folder for checkpoint files (one subfolder per search).
        on_progress: called with a ``SearchProgress`` at every step boundary.
        should_stop: polled at every step boundary; True cancels the search.
        max_recoveries: times a lost replica group is rebuilt before the search fails.
        interrupted_status: what a search stopped from outside (Ctrl-C, SIGTERM) becomes:
            ``cancelled`` for the CLI; None leaves it active for a dispatcher to resume.
        fence: the lease the driver runs under (None: unfenced, the CLI's own search).
    """

    def __init__(
        self,
        spec: SearchSpec,
        *,
        store: SearchStore,
        checkpoint_dir: Path,
        on_progress: Callable[[SearchProgress], None] | None = None,
        should_stop: Callable[[], bool] | None = None,
        max_recoveries: int = 3,
        interrupted_status: str | None = "cancelled",
        fence: Fence | None = None,
    ) -> None:
        self.spec = spec
        self.interrupted_status = interrupted_status
        self.fence = fence
        self.store = store
        self.checkpoint_dir = Path(checkpoint_dir)
        self.on_progress = on_progress
        self.should_stop = should_stop
        self.max_recoveries = max_recoveries
        self._group: ActorGroup | None = None  # the actors, while a group runs

    @property
    def replicas(self) -> list[Any]:
        """The replica actors of the current group (empty when none runs)."""
        return [] if self._group is None else list(self._group.replicas)

    @property
    def controller(self) -> Any:
        """The controller actor of the current group (None when none runs)."""
        return None if self._group is None else self._group.controller

    # entry point

    def run(self, search_id: str) -> SearchOutcome:
        """Run (or resume, from its last checkpoint) the search ``search_id`` to its end.

        Raises:
            SearchCancelledError: ``should_stop`` said so; the search is marked cancelled.
            LeaseLostError: another dispatcher took the search over; nothing is marked.
            Exception: whatever failed; the search is marked failed with the message.
        """
        self.search_id = search_id
        fence = self.fence
        self._checkpoints = SearchCheckpoints(self.store, search_id, self.checkpoint_dir, fence)
        self.store.mark_running(search_id, fence=fence)
        try:
            ensure_ray()
            self._checkpoints.check_writable()
            outcome = self._run_with_recovery()
        except LeaseLostError:
            log.warning("search %s: lease lost; stopping without another write", search_id)
            raise
        except SearchCancelledError:
            self.store.mark_finished(search_id, "cancelled", fence=fence)
            raise
        except (KeyboardInterrupt, SystemExit):
            # Stopped from outside (Ctrl-C, SIGTERM): resumable like a cancelled search.
            if self.interrupted_status is not None:
                self.store.mark_finished(
                    search_id, self.interrupted_status, error="interrupted", fence=fence
                )
            raise
        except BaseException as e:
            self.store.mark_finished(search_id, "failed", error=one_line_error(e), fence=fence)
            raise
        finally:
            self._teardown()
        if not self.spec.checkpoints.keep_after_success:
            self._checkpoints.forget()  # a search that succeeded is never resumed
        self.store.mark_finished(search_id, "succeeded", fence=fence)
        return outcome.model_copy(update={"status": "succeeded"})

    def _run_with_recovery(self) -> SearchOutcome:
        recoveries = 0
        while True:
            try:
                start_epoch, best = self._start_group()
                return self._search(start_epoch, best, recoveries)
            except ReplicaLostError as e:
                if recoveries >= self.max_recoveries:
                    raise SearchFaultError(
                        f"{e}; gave up after {recoveries} recoveries of the replica group"
                    ) from e
                recoveries += 1
                log.warning("%s; rebuilding the replica group from the last checkpoint", e)
                self._teardown()

    # group

    def _start_group(self) -> tuple[int, _Best]:
        """Start a group and bring it to where the search stands: the newest readable
        checkpoint's state (the rows after it rewound), or a fresh start."""
        self._group = ActorGroup.start(self.spec, str(self._checkpoints.controller_state))
        group = self._group
        checkpoint, payload = self._checkpoints.newest_readable()
        if checkpoint is None:
            group.gather([group.controller.reset.remote()])
            self.store.rewind(self.search_id, -1, fence=self.fence)
            return 0, _Best()
        weights = ray.put(payload["weights"])
        rngs = payload["rng"]
        group.gather(
            [
                r.load_state.remote(weights, rngs[rank] if rank < len(rngs) else rngs[0])
                for rank, r in enumerate(group.replicas)
            ]
        )
        group.gather([group.controller.load_state_dict.remote(payload["controller"])])
        self.store.rewind(self.search_id, checkpoint.epoch, fence=self.fence)
        best = _Best(payload["best"]["reward"], _tuple_or_none(payload["best"]["arch"]))
        return checkpoint.epoch + 1, best

    def _teardown(self) -> None:
        if self._group is not None:
            self._group.teardown()
            self._group = None

    # the loop

    def _search(self, start_epoch: int, best: _Best, recoveries: int) -> SearchOutcome:
        group = self._group
        spec = self.spec
        samples = self.store.count_samples(self.search_id)
        self._position = SearchProgress(
            search_id=self.search_id,
            epoch=start_epoch,
            epochs=spec.epochs,
            phase="shared",
            step=0,
            steps=0,
            samples=samples,
            best_reward=best.reward,
            best_arch=best.arch,
        )
        steps = group.info["steps_per_epoch"]
        self._report(epoch=start_epoch, phase="shared", step=0, steps=steps, best=best)
        for epoch in range(start_epoch, spec.epochs):
            started = time.perf_counter()
            loss, lr = self._shared_phase(epoch)
            stats = self._controller_phase(epoch, best)
            self.store.add_epoch(
                self.search_id,
                EpochRecord(
                    epoch=epoch,
                    train_loss=loss,
                    shared_steps=group.info["steps_per_epoch"],
                    lr=lr,
                    controller_entropy=stats.get("entropy"),
                    mean_reward=stats.get("mean_reward"),
                    baseline=stats.get("baseline"),
                    seconds=time.perf_counter() - started,
                ),
                fence=self.fence,
            )
            self._checkpoint(epoch, best)
            log.info(
                "epoch %d/%d: shared loss %.4f, mean reward %s, controller entropy %s, "
                "best %s on one minibatch (%.1f s)",
                epoch + 1, spec.epochs, loss, _fmt(stats.get("mean_reward")),
                _fmt(stats.get("entropy")), _fmt(best.reward), time.perf_counter() - started,
            )  # fmt: skip
        result = self._derive_phase(best)
        return SearchOutcome(
            search_id=self.search_id,
            status="running",
            reward=spec.reward,
            best_arch=result.arch,
            best_reward=result.reward,
            metrics={k: v for k, v in result.metrics.items() if k in METRIC_NAMES},
            params=result.params,
            candidates=result.candidates or 0,
            epochs=spec.epochs,
            samples=self.store.count_samples(self.search_id),
            recoveries=recoveries,
        )

    def _shared_phase(self, epoch: int) -> tuple[float, float]:
        group = self._group
        steps = group.info["steps_per_epoch"]
        archs = group.gather([group.controller.sample.remote(steps)])[0]
        losses: list[float] = []
        for first in range(0, steps, SHARED_CHUNK):
            self._check_stop()
            chunk = archs[first : first + SHARED_CHUNK]
            results = group.gather(
                [r.train_steps.remote(epoch, first, chunk) for r in group.replicas]
            )
            losses.extend(results[0])
            self._report(epoch=epoch, phase="shared", step=first + len(chunk), steps=steps)
        lr = group.gather([group.replicas[0].lr.remote()])[0]
        return math.fsum(losses) / len(losses), lr

    def _controller_phase(self, epoch: int, best: _Best) -> dict[str, float]:
        group = self._group
        phase = self.spec.controller_phase
        rewards: list[float] = []
        last: dict[str, float] = {}
        for step in range(phase.steps):
            self._check_stop()
            group.check_controller()
            batch = group.gather([group.controller.sample_batch.remote()])[0]
            size = len(batch.samples)
            # Common random numbers: the whole batch is scored on one validation minibatch,
            # drawn afresh for every controller step, so the rewards the update compares
            # differ by architecture, not by the images each one happened to get.
            minibatch = epoch * phase.steps + step
            # Round-robin over the replicas; each reply is reported as soon as it arrives.
            parts = [list(range(r, size, len(group.replicas))) for r in range(len(group.replicas))]
            pending = {}
            for replica, part in zip(group.replicas, parts, strict=True):
                if part:
                    archs = [batch.samples[i].arch for i in part]
                    pending[replica.score_minibatch.remote(archs, minibatch, phase.batch_size)] = (
                        part
                    )
            scored_rows: dict[int, SampleRecord] = {}
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1)
                part = pending.pop(ready[0])
                scored = group.gather(ready)[0]
                for i, m in zip(part, scored, strict=True):
                    arch = batch.samples[i].arch
                    scored_rows[i] = self._sample_row(
                        "controller", epoch, step, i, arch, m, batch.version
                    )
                report = {batch.samples[i].sample_id: scored_rows[i].reward for i in part}
                update = group.gather([group.controller.report.remote(batch.version, report)])[0]
                if update is not None:
                    last = {
                        "entropy": update.mean_entropy,
                        "mean_reward": update.mean_reward,
                        "baseline": update.baseline,
                    }
            rows = [scored_rows[i] for i in range(size)]
            self.store.add_samples(self.search_id, rows, fence=self.fence)
            for row in rows:
                rewards.append(row.reward)
                best.offer(row.reward, row.arch)
            self._count(len(rows), best)
            self._report(
                epoch=epoch, phase="controller", step=step + 1, steps=phase.steps, best=best
            )
        if rewards:
            last["mean_reward"] = math.fsum(rewards) / len(rewards)
        return last

    def _derive_phase(self, best: _Best) -> ResultRecord:
        group = self._group
        spec, derive = self.spec, self.spec.derive
        self._check_stop()
        archs: list[tuple[int, ...]] = []
        if derive.samples:
            archs += [
                tuple(a) for a in group.gather([group.controller.sample.remote(derive.samples)])[0]
            ]
        if derive.greedy:
            greedy = group.gather([group.controller.greedy.remote()])[0]
            if greedy is not None:  # a uniform sampler has no most likely architecture
                archs.append(tuple(greedy))
        version = group.gather([group.controller.version.remote()])[0]
        self._report(epoch=spec.epochs, phase="derive", step=0, steps=len(archs))
        group.check_controller()
        # Each distinct architecture is scored once, on the replica its turn falls to, one
        # small chunk per replica at a time: progress and cancellation between chunks.
        unique = list(dict.fromkeys(archs))
        n = len(group.replicas)
        chunk = n * DERIVE_CHUNK
        scored: dict[tuple[int, ...], dict[str, float]] = {}
        for first in range(0, len(unique), chunk):
            self._check_stop()
            part = unique[first : first + chunk]
            refs = [
                group.replicas[r].score_split.remote(
                    part[r::n], spec.controller_phase.batch_size, derive.max_batches
                )
                for r in range(n)
            ]
            for r, metrics in enumerate(group.gather(refs)):
                scored.update(zip(part[r::n], metrics, strict=True))
            done = sum(1 for a in archs if a in scored)
            self._report(epoch=spec.epochs, phase="derive", step=done, steps=len(archs))
        rows = [
            self._sample_row("derive", spec.epochs, 0, i, arch, scored[arch], version)
            for i, arch in enumerate(archs)
        ]
        self.store.add_samples(self.search_id, rows, fence=self.fence)
        winner = max(rows, key=lambda row: row.reward)  # first of equals: lowest index
        result = ResultRecord(
            arch=winner.arch,
            reward=winner.reward,
            metrics=scored[tuple(winner.arch)],
            params=winner.params,
            candidates=len(unique),
        )
        self.store.set_result(self.search_id, result, fence=self.fence)
        log.info(
            "derive: %d architectures sampled, %d distinct; the best %s, reward %.4f on the "
            "validation split, %d parameters",
            len(archs), len(unique), " ".join(map(str, winner.arch)), winner.reward, winner.params,
        )  # fmt: skip
        # From here the best is the result, scored on the validation split, not the best
        # one-minibatch reward of the controller phase (a noisier, often higher number).
        best.reward, best.arch = winner.reward, tuple(winner.arch)
        self._count(len(rows), best)
        self._report(
            epoch=spec.epochs, phase="derive", step=len(archs), steps=len(archs), best=best
        )
        return result

    def _checkpoint(self, epoch: int, best: _Best) -> None:
        group = self._group
        states = group.gather([r.state.remote() for r in group.replicas])
        controller = group.gather([group.controller.state_dict.remote()])[0]
        payload = {
            "search_id": self.search_id,
            "epoch": epoch,
            "spec": self.spec.model_dump(mode="json"),
            "weights": {k: v for k, v in states[0].items() if k != "rng"},
            "rng": [s["rng"] for s in states],
            "controller": controller,
            "best": {"reward": best.reward, "arch": None if best.arch is None else list(best.arch)},
        }
        self._checkpoints.save(epoch, payload, keep=self.spec.checkpoints.keep)

    # progress and cancellation

    def _sample_row(
        self,
        phase: str,
        epoch: int,
        step: int,
        index: int,
        arch: Sequence[int],
        metrics: dict[str, float],
        version: int,
    ) -> SampleRecord:
        sizes = self._group.sizes
        assert sizes is not None, "the replicas describe the space before any sample"
        params, flops = sizes.params(arch), sizes.flops(arch)
        return SampleRecord(
            phase=phase,
            epoch=epoch,
            step=step,
            index=index,
            arch=list(arch),
            reward=self._reward(metrics, params, flops),
            policy_version=version,
            params=params,
            flops=flops,
            **{k: metrics[k] for k in METRIC_NAMES},
        )

    def _reward(self, metrics: dict[str, float], params: int, flops: int) -> float:
        """What the controller is rewarded with for an architecture of ``params`` and
        ``flops`` scored ``metrics``: the spec's metric, weighed by the size when the spec asks
        (``reward_cost``)."""
        value = metrics[self.spec.reward]
        cost = self.spec.reward_cost
        if cost is None:
            return value
        return cost.weigh(value, params if cost.cost == "params" else flops)

    def _report(
        self, *, epoch: int, phase: str, step: int, steps: int, best: _Best | None = None
    ) -> None:
        self._position = replace(self._position, epoch=epoch, phase=phase, step=step, steps=steps)
        best_arch = None if best is None or best.arch is None else list(best.arch)
        self.store.update_progress(
            self.search_id,
            self._position.as_dict(),
            best_arch=best_arch,
            best_reward=None if best is None else best.reward,
            fence=self.fence,
        )
        if self.on_progress is not None:
            self.on_progress(self._position)

    def _count(self, rows: int, best: _Best) -> None:
        """``rows`` more samples are stored; ``best`` is the best so far."""
        self._position = replace(
            self._position,
            samples=self._position.samples + rows,
            best_reward=best.reward,
            best_arch=best.arch,
        )

    def _check_stop(self) -> None:
        if self.should_stop is not None and self.should_stop():
            raise SearchCancelledError(f"search {self.search_id} was cancelled")


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def _tuple_or_none(arch: Sequence[int] | None) -> tuple[int, ...] | None:
    return None if arch is None else tuple(arch)


def one_line_error(error: BaseException) -> str:
    """``Type: last line of its message``, at most 2,000 characters: what a row's ``error``
    column keeps."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[-1] if text else ''}"[:2000]
