"""One retraining as a Ray Tune trial (``retrain_trial``: a fresh child network trained an
epoch at a time, reporting its validation score and a checkpoint after every epoch), and the
test of a trial's last checkpoint (``test_checkpoint``, run as a Ray task)."""

from __future__ import annotations

import io
import logging
import tempfile
from pathlib import Path
from typing import Any

import torch
from ray import tune

from searchspec.spec import SpaceSpec
from supernet.data import load_dataset
from supernet.metrics import METRIC_NAMES
from supernet.space import SearchSpace
from supernet.training import ChildTrainer, TrainConfig
from workers.retrain_jobs import RetrainJob

STATE_FILE = "state.pt"  # a trial checkpoint's file: the trainer's whole state


def retrain_trial(config: dict[str, Any]) -> None:
    """A Tune trial: train ``config["job"]``'s architecture, report and checkpoint per epoch."""
    quiet_trial()
    job = RetrainJob.model_validate(config["job"])
    train = TrainConfig.model_validate(config["train"])
    torch.set_num_threads(max(1, int(config["cpus"])))
    torch.manual_seed(train.seed)
    trainer, _ = _trainer(job, train, cache_dir=config.get("cache_dir"))
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:  # a retry after a crash goes on from the last epoch
        with checkpoint.as_directory() as folder:
            trainer.load_state_dict(torch.load(Path(folder) / STATE_FILE, weights_only=True))
    while trainer.epoch < train.epochs:
        stats = trainer.train_epoch()
        metrics = {
            "epoch": trainer.epoch,
            "score": getattr(stats.val, job.metric),
            "train_loss": stats.train_loss,
            **{f"val_{name}": getattr(stats.val, name) for name in METRIC_NAMES},
        }
        with tempfile.TemporaryDirectory() as folder:
            torch.save(trainer.state_dict(), Path(folder) / STATE_FILE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))


def quiet_trial() -> None:
    """Inside a trial: no log line per checkpoint reported."""
    logging.getLogger("ray.train").setLevel(logging.WARNING)


def _trainer(
    job: RetrainJob, train: TrainConfig, *, cache_dir: str | None = None
) -> tuple[ChildTrainer, SearchSpace]:
    data = load_dataset(job.dataset)
    space = SpaceSpec.model_validate(job.space).build(
        num_classes=data.num_classes, in_channels=data.in_channels
    )
    cache = Path(cache_dir) if cache_dir else None
    return ChildTrainer(space, job.arch, data, train, cache_dir=cache), space


def test_checkpoint(
    job: dict[str, Any], train: dict[str, Any], checkpoint: tune.Checkpoint
) -> dict[str, Any]:
    """A trial's last checkpoint on the test split. Runs as a Ray task on any node, so the
    weights travel back in the answer (a few MB) rather than in that node's files."""
    retrain = RetrainJob.model_validate(job)
    config = TrainConfig.model_validate(train)
    trainer, space = _trainer(retrain, config)
    with checkpoint.as_directory() as folder:
        trainer.load_state_dict(torch.load(Path(folder) / STATE_FILE, weights_only=True))
    result = trainer.result()
    weights = io.BytesIO()
    torch.save(trainer.model.state_dict(), weights)
    data = trainer.data
    return {
        "params": result.params,
        "epochs": trainer.epoch,
        "test": {name: getattr(result.test, name) for name in METRIC_NAMES},
        "val": result.val.model_dump(mode="json"),
        "space": space.model_dump(mode="json"),
        "weights": weights.getvalue(),
        "data": {
            "classes": list(data.class_names),
            "mean": list(data.mean),
            "std": list(data.std),
            "ignore_index": data.ignore_index,
            "input_size": int(retrain.dataset.get("size") or data.val[0][0].shape[-1]),
        },
    }
