"""The fixed-architecture training loop, on small embedded digits."""

from pathlib import Path

import pytest
import torch

from errors import ConfigError, DatasetError
from searchspec.spec import load_search_spec
from supernet.data import DigitsSpec, load_dataset
from supernet.metrics import ConfusionMatrix
from supernet.network import build_child
from supernet.space import SearchSpace
from supernet.training import ChildTrainer, TrainConfig, evaluate, make_loader, train_child

REPO = Path(__file__).resolve().parents[1]
TINY = DigitsSpec(images=60, size=24)


@pytest.fixture(scope="module")
def tiny_data():
    return load_dataset(TINY)


def tiny_space(**kwargs) -> SearchSpace:
    return SearchSpace(**{"layers": 3, "channels": 8, "num_classes": 11, **kwargs})


def test_train_child_reports_metrics_and_history(tiny_data):
    steps = []
    result = train_child(
        tiny_space(),
        (0, 2, 5),
        tiny_data,
        TrainConfig(epochs=2, batch_size=16),
        on_step=steps.append,
    )
    assert result.arch == [0, 2, 5]
    assert result.params == sum(
        p.numel() for p in build_child(tiny_space(), (0, 2, 5)).parameters()
    )
    assert [e.epoch for e in result.history] == [0, 1]
    assert result.val == result.history[-1].val
    for m in (result.val, result.test):
        for value in (m.accuracy, m.mean_precision, m.mean_recall, m.miou, m.miou_plus):
            assert 0.0 <= value <= 1.0
    assert result.test.pixels == len(tiny_data.test) * 24 * 24 - _ignored(tiny_data.test)
    # one progress call per optimiser step: ceil(42 / 16) steps per epoch, two epochs
    assert [(p.epoch, p.step) for p in steps] == [(e, s) for e in range(2) for s in range(3)]


def _ignored(split) -> int:
    return sum(int((split[i][1] == 255).sum()) for i in range(len(split)))


def test_training_is_reproducible_from_its_seed(tiny_data):
    config = TrainConfig(epochs=1, batch_size=16, seed=3)
    first = train_child(tiny_space(), (1, 3, 4), tiny_data, config)
    second = train_child(tiny_space(), (1, 3, 4), tiny_data, config)
    assert first.test == second.test
    assert first.history[0].train_loss == second.history[0].train_loss


def test_a_trainer_resumed_from_its_state_trains_exactly_as_one_that_was_not_stopped(
    tiny_data,
):
    config = TrainConfig(epochs=3, batch_size=16, seed=5)
    torch.manual_seed(5)
    straight = ChildTrainer(tiny_space(), (0, 3, 4), tiny_data, config)
    for _ in range(3):
        straight.train_epoch()

    torch.manual_seed(5)
    first = ChildTrainer(tiny_space(), (0, 3, 4), tiny_data, config)
    first.train_epoch()
    state = first.state_dict()
    torch.manual_seed(123)  # the process that resumes starts from another RNG and init
    resumed = ChildTrainer(tiny_space(), (0, 3, 4), tiny_data, config)
    resumed.load_state_dict(state)
    while resumed.epoch < 3:
        resumed.train_epoch()

    assert [e.train_loss for e in resumed.history] == [e.train_loss for e in straight.history]
    for name, tensor in straight.model.state_dict().items():
        assert torch.equal(tensor, resumed.model.state_dict()[name]), name
    assert resumed.result().test == straight.result().test


def test_a_trainer_has_no_result_before_its_first_epoch(tiny_data):
    trainer = ChildTrainer(tiny_space(), (0, 0, 0), tiny_data, TrainConfig(epochs=1))
    with pytest.raises(ConfigError, match="no epoch"):
        trainer.result()


def test_evaluate_counts_every_pixel_of_the_split(tiny_data):
    model = build_child(tiny_space(), (0, 0, 0))
    loader = make_loader(tiny_data.val, batch_size=7, shuffle=False)
    metrics = evaluate(model, loader, num_classes=11)
    assert model.training  # evaluate restores the mode it found
    matrix = ConfusionMatrix(11)
    model.eval()
    with torch.no_grad():
        for images, masks in loader:
            matrix.update(model(images), masks)
    assert metrics == matrix.compute()


def test_mismatched_classes_are_a_config_error(tiny_data):
    with pytest.raises(ConfigError, match=r"21 classes .* the data set 11"):
        train_child(SearchSpace(layers=3, channels=8), (0, 0, 0), tiny_data, TrainConfig(epochs=1))


def test_empty_split_is_a_dataset_error():
    data = load_dataset(DigitsSpec(images=3, size=24))  # 7:2:1 of 3 leaves test empty
    empty = [name for name in ("train", "val", "test") if len(data.split(name)) == 0]
    assert empty
    with pytest.raises(DatasetError, match=f"the {empty[0]} split is empty"):
        train_child(tiny_space(), (0, 0, 0), data, TrainConfig(epochs=1))


def test_unknown_device_is_a_config_error(tiny_data):
    with pytest.raises(ConfigError, match="unknown device"):
        train_child(tiny_space(), (0, 0, 0), tiny_data, TrainConfig(epochs=1, device="tpu"))


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_the_demo_task_tells_convolutions_from_pooling(seed: int) -> None:
    """The smoke search's task (``configs/digits-smoke.yaml``: digit ink against the
    background and the scribbles drawn on it) must be hard enough that architectures differ:
    telling strokes from scribbles needs learned spatial features, which a child of only
    pooling cells (1x1 convs between fixed pools) lacks. When this was written, seeds 0 to 5
    gave the conv5x5 child 0.85 to 0.89 test mIoU and the pooling child 0.45 to 0.73 after
    three epochs (each difference 0.12 or more). About 10 s a seed."""
    spec = load_search_spec(REPO / "configs" / "digits-smoke.yaml")
    data = load_dataset(spec.dataset)
    space = spec.space.build(num_classes=data.num_classes, in_channels=data.in_channels)
    config = TrainConfig(epochs=3, batch_size=16, seed=seed)
    conv = train_child(space, (2,) * space.layers, data, config).test.miou
    pool = train_child(space, (4, 5) * (space.layers // 2), data, config).test.miou
    assert conv - pool > 0.08, (conv, pool)


def test_training_leaves_the_callers_random_stream_alone(tiny_data):
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    train_child(tiny_space(), (0, 0, 0), tiny_data, TrainConfig(epochs=1, batch_size=32))
    assert torch.equal(torch.rand(3), expected)


def test_a_non_finite_loss_is_a_user_error(tiny_data):
    import dataclasses

    from errors import SegnasError, TrainingDivergedError

    class Poisoned(torch.utils.data.Dataset):
        """The real train split with one pixel overflowed, as a far too high lr would do."""

        def __len__(self):
            return len(tiny_data.train)

        def __getitem__(self, i):
            image, mask = tiny_data.train[i]
            image[0, 0, 0] = float("inf")
            return image, mask

    data = dataclasses.replace(tiny_data, train=Poisoned())
    with pytest.raises(TrainingDivergedError, match="lower the learning rate") as info:
        train_child(tiny_space(), (0, 2, 0), data, TrainConfig(epochs=1, batch_size=8))
    assert isinstance(info.value, SegnasError)


def doubled_voc(root: Path) -> Path:
    """The VOC fixture with every sample twice (8 ids): no split of the paper's 7:2:1 empty."""
    import shutil

    shutil.copytree(Path(__file__).parent / "fixtures" / "voc2012-sample", root)
    voc = root / "VOCdevkit" / "VOC2012"
    lists = voc / "ImageSets" / "Segmentation"
    ids = (lists / "trainval.txt").read_text().split()
    for sample in ids:
        shutil.copy(voc / "JPEGImages" / f"{sample}.jpg", voc / "JPEGImages" / f"{sample}b.jpg")
        shutil.copy(
            voc / "SegmentationClass" / f"{sample}.png",
            voc / "SegmentationClass" / f"{sample}b.png",
        )
    (lists / "trainval.txt").write_text("\n".join([*ids, *(f"{i}b" for i in ids)]) + "\n")
    return root


@pytest.mark.parametrize("kind", ["digits", "voc"])
def test_evaluating_from_the_decode_cache_gives_the_same_metrics(kind, tmp_path):
    """Validation and test read once from the cache and held ready: the same pixels in the
    same batches as the loader, so the same metrics, and the same training."""
    from supernet.data import VocSpec

    data = load_dataset(TINY) if kind == "digits" else load_dataset(
        VocSpec(kind="voc", root=doubled_voc(tmp_path / "voc"), size=32, seed=0)
    )  # fmt: skip
    space = tiny_space(num_classes=data.num_classes)
    config = TrainConfig(epochs=2, batch_size=3, seed=2)
    runs = []
    for cache in (None, tmp_path / "cache"):
        torch.manual_seed(2)
        trainer = ChildTrainer(space, (1, 2, 0), data, config, cache_dir=cache)
        while trainer.epoch < config.epochs:
            trainer.train_epoch()
        runs.append((trainer.history, trainer.result().test, trainer.evaluate("train")))
    (plain_history, plain_test, plain_train), (cached_history, cached_test, cached_train) = runs
    assert [e.val for e in cached_history] == [e.val for e in plain_history]
    assert cached_test == plain_test and cached_train == plain_train
    if kind == "voc":  # files on disk: the splits are in the cache for the next trainer
        assert any((tmp_path / "cache").iterdir())
