"""The figures of a search-phase evaluation (``segnas evaluate``), from its rows alone.

After Yu et al., "Evaluating the search phase of neural architecture search" (ICLR 2020).
Every method gives one architecture per seed; each architecture's score is its test metrics
retrained from scratch, averaged over the training seeds; a method's figure is the mean and
standard deviation of that over the seeds. Kendall's tau compares a supernet's shared-weight
ranking of the uniformly drawn architectures with their retrained ranking, per seed.

Pure data in, plain data out: no torch, no database.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import BaseModel, ConfigDict

from reports.stats import kendall_tau
from supernet.metrics import METRIC_NAMES

ENAS_METHODS: dict[str, str] = {
    "accuracy": "enas_accuracy",
    "miou": "enas_miou",
    "miou_plus": "enas_miou_plus",
}
"""The ENAS method of each reward."""
MATCHED_METHODS: dict[str, str] = {m: f"param_matched_{r}" for r, m in ENAS_METHODS.items()}
"""Each ENAS method's own parameter-matched control (``param_matched`` is the spec's reward's,
under its older name)."""
SEARCH_METHODS: tuple[str, ...] = (*ENAS_METHODS.values(), "random_ws")
CONTROL_METHODS: tuple[str, ...] = ("largest", "param_matched")
SIZE_METHODS: tuple[str, ...] = ("unconstrained", "unconstrained_shrunk")
"""Where the spec's reward weighs size: the same search with the metric alone, and its pick
with fewer channels, as many parameters as the size-aware pick."""
METHODS: tuple[str, ...] = (
    *SEARCH_METHODS, *CONTROL_METHODS, *MATCHED_METHODS.values(), *SIZE_METHODS
)  # fmt: skip

Network = tuple[tuple[int, ...], int | None]
"""What is trained: an architecture, and its channels where they are not its space's (None)."""


class Trained(BaseModel):
    """One architecture's retrained test metrics (means over its training seeds)."""

    model_config = ConfigDict(frozen=True)

    arch: tuple[int, ...]
    params: int | None
    seeds: int
    metrics: dict[str, float]
    channels: int | None = None


def retrained_means(rows: Sequence[Mapping[str, Any]]) -> dict[Network, Trained]:
    """Each network's test metrics averaged over the training seeds that produced them
    (failed trainings, with no metrics, left out)."""
    by_network: dict[Network, list[Mapping[str, Any]]] = {}
    for row in rows:
        if row.get("miou") is not None:
            key = (tuple(row["arch"]), row.get("channels"))
            by_network.setdefault(key, []).append(row)
    return {
        (arch, channels): Trained(
            arch=arch,
            channels=channels,
            params=group[0].get("params"),
            seeds=len(group),
            metrics={m: statistics.fmean(float(r[m]) for r in group) for m in METRIC_NAMES},
        )
        for (arch, channels), group in by_network.items()
    }


def seed_agreement(
    rows: Sequence[Mapping[str, Any]], archs: Sequence[Sequence[int]], metric: str
) -> dict[str, Any]:
    """How well the ground truth agrees with itself: over ``archs`` (the uniform sample),
    Kendall's tau between the rankings that two training seeds give, for every pair of seeds,
    and the spread of one architecture's score across seeds beside the spread between
    architectures. A supernet cannot be expected to rank architectures better than two
    trainings of them agree.

    Returns:
        ``tau`` (mean over seed pairs, None with fewer than two seeds), ``tau_per_pair``
        (``"0-1"``: tau), ``within_sd`` (root mean square over architectures of the sd across
        seeds), ``between_sd`` (sd of the seed-mean scores) and ``architectures``.
    """
    wanted = {tuple(a) for a in archs}
    by_seed: dict[int, dict[tuple[int, ...], float]] = {}
    for row in rows:
        arch = tuple(row["arch"])
        if arch in wanted and row.get(metric) is not None:
            by_seed.setdefault(int(row["train_seed"]), {})[arch] = float(row[metric])
    seeds = sorted(by_seed)
    pairs: dict[str, float] = {}
    for i, a in enumerate(seeds):
        for b in seeds[i + 1 :]:
            common = [x for x in by_seed[a] if x in by_seed[b]]
            tau = kendall_tau([by_seed[a][x] for x in common], [by_seed[b][x] for x in common])
            if tau is not None:
                pairs[f"{a}-{b}"] = tau
    complete = [x for x in wanted if all(x in by_seed[s] for s in seeds)]
    within = (
        math.sqrt(
            statistics.fmean(statistics.variance([by_seed[s][x] for s in seeds]) for x in complete)
        )
        if len(seeds) > 1 and complete
        else None
    )
    means = [statistics.fmean(by_seed[s][x] for s in seeds) for x in complete]
    return {
        "tau": statistics.fmean(pairs.values()) if pairs else None,
        "tau_per_pair": pairs,
        "within_sd": within,
        "between_sd": statistics.stdev(means) if len(means) > 1 else None,
        "architectures": len(complete),
    }


def _mean_sd(values: Sequence[float]) -> tuple[float | None, float | None]:
    if not values:
        return None, None
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else None)


def kendall_null_se(n: int) -> float | None:
    """Standard error of Kendall's tau between ``n`` independent pairs (no ties):
    ``sqrt(2 (2n + 5) / (9 n (n - 1)))``."""
    if n < 2:
        return None
    return math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1)))


def summarise(
    *,
    picks: Mapping[int, Mapping[str, Sequence[int]]],
    trained: Mapping[Network, Trained],
    shared: Mapping[int, Mapping[str, Mapping[tuple[int, ...], float]]],
    uniform: Sequence[Sequence[int]],
    metric: str,
    channels: Mapping[int, Mapping[str, int]] | None = None,
    size_target: int | None = None,
) -> dict[str, Any]:
    """The evaluation's summary.

    Args:
        picks: ``{seed: {method: architecture}}``.
        trained: retrained test metrics by network (``retrained_means``).
        shared: ``{seed: {"enas" | "uniform": {architecture: shared-weight score}}}`` of the
            uniformly drawn architectures under that seed's ENAS and uniform supernets.
        uniform: the uniformly drawn architectures (the ground-truth sample).
        metric: the metric the rankings and the goal are judged on (the spec's reward).
        channels: ``{seed: {method: channels}}`` of the picks trained at other channels than
            their space's (``unconstrained_shrunk``).
        size_target: the size-aware reward's target in parameters, for ``size_goal``.

    Returns:
        A JSON-ready mapping: ``methods`` (per method: mean and sd over seeds of each retrained
        test metric, mean parameters, the architecture of every seed), ``kendall_tau``
        (``enas``, ``uniform``: mean over seeds), ``kendall_tau_sd``, ``kendall_tau_se``,
        ``kendall_tau_per_seed``, ``uniform_distribution`` (the retrained uniform sample's
        quantiles), ``goal``, ``size_goal`` (where there is ``unconstrained_shrunk``) and
        counts.
    """
    seeds = sorted(picks)
    widths = channels or {}
    methods: dict[str, Any] = {}
    for method in METHODS:
        networks = [
            (tuple(picks[s][method]), widths.get(s, {}).get(method))
            for s in seeds
            if method in picks[s]
        ]
        scores = [trained[n] for n in networks if n in trained]
        if not networks:
            continue
        entry: dict[str, Any] = {
            "archs": [list(a) for a, _ in networks],
            "retrained": len(scores),
        }
        if any(c is not None for _, c in networks):
            entry["channels"] = [c for _, c in networks]
        for m in METRIC_NAMES:
            mean, sd = _mean_sd([t.metrics[m] for t in scores])
            entry[f"test_{m}_mean"], entry[f"test_{m}_sd"] = mean, sd
        entry[f"per_seed_{metric}"] = [t.metrics[metric] for t in scores]
        params = [t.params for t in scores if t.params is not None]
        entry["params"] = round(statistics.fmean(params)) if params else None
        entry["per_seed_params"] = params
        methods[method] = entry

    supernets = dict.fromkeys(["enas", "uniform", *(n for by in shared.values() for n in by)])
    taus: dict[str, list[float]] = {name: [] for name in supernets}
    pairs: dict[str, int] = dict.fromkeys(supernets, 0)
    points: dict[int, dict[str, list[list[float]]]] = {}
    for seed in seeds:
        for supernet in taus:
            scored = shared.get(seed, {}).get(supernet, {})
            common = [a for a in map(tuple, uniform) if a in scored and (a, None) in trained]
            truth = [trained[(a, None)].metrics[metric] for a in common]
            points.setdefault(seed, {})[supernet] = [
                [scored[a], t] for a, t in zip(common, truth, strict=True)
            ]
            tau = kendall_tau([scored[a] for a in common], truth)
            if tau is not None:
                taus[supernet].append(tau)
                pairs[supernet] = len(common)
    tau_mean = {k: _mean_sd(v)[0] for k, v in taus.items()}
    tau_sd = {k: _mean_sd(v)[1] for k, v in taus.items()}

    ground = sorted(
        trained[(a, None)].metrics[metric] for a in map(tuple, uniform) if (a, None) in trained
    )
    size = {"size_goal": _size_goal(methods, metric, size_target)} if size_target else {}
    return {
        "metric": metric,
        "seeds": len(seeds),
        "methods": methods,
        "kendall_tau": tau_mean,
        "kendall_tau_sd": tau_sd,
        "kendall_tau_se": {k: kendall_null_se(n) for k, n in pairs.items()},
        "kendall_tau_per_seed": taus,
        "shared_vs_retrained": points,
        "architectures_retrained": len(trained),
        "uniform_distribution": _quantiles(ground),
        "goal": _goal(methods, tau_mean, metric),
        **size,
    }


def _quantiles(values: Sequence[float]) -> dict[str, float] | None:
    if not values:
        return None
    return {
        "count": len(values),
        "min": values[0],
        "median": statistics.median(values),
        "max": values[-1],
        "mean": statistics.fmean(values),
    }


TAU_GOAL = 0.6


def _goal(methods: Mapping[str, Any], tau: Mapping[str, float | None], metric: str) -> dict:
    """The issue's goal: the best ENAS reward's pick beats ``random_ws`` and its own
    parameter-matched control by more than the larger of their standard deviations, and the
    ENAS supernet's tau >= 0.6. (A control matched to another reward's picks would let a
    reward that picks large networks win on size alone.)"""
    key, sd_key = f"test_{metric}_mean", f"test_{metric}_sd"
    enas = {
        m: methods[m][key]
        for m in ENAS_METHODS.values()
        if m in methods and methods[m][key] is not None
    }
    if not enas:
        return {"met": False, "reason": "a method has no retrained architecture"}
    best = max(enas, key=lambda m: enas[m])
    matched = MATCHED_METHODS[best] if MATCHED_METHODS[best] in methods else "param_matched"
    controls = ("random_ws", matched)
    if any(m not in methods or methods[m][key] is None for m in controls):
        return {"met": False, "reason": "a method has no retrained architecture"}
    spread = max((methods[m][sd_key] or 0.0) for m in controls)
    margins = {m: enas[best] - methods[m][key] for m in controls}
    beats = all(v > spread for v in margins.values())
    tau_ok = tau.get("enas") is not None and tau["enas"] >= TAU_GOAL
    return {
        "best_enas": best,
        "matched_control": matched,
        "margins": margins,
        "larger_sd": spread,
        "beats_controls": beats,
        "tau_enas": tau.get("enas"),
        "tau_goal": TAU_GOAL,
        "tau_met": tau_ok,
        "met": beats and tau_ok,
    }


def _size_goal(methods: Mapping[str, Any], metric: str, target: int) -> dict[str, Any]:
    """The size-aware issue's goal: the size-aware search's pick is within the target and
    beats, by more than the larger of their standard deviations, a random architecture of its
    size (``param_matched``) and the unconstrained search's pick shrunk to its size
    (``unconstrained_shrunk``)."""
    key, sd_key = f"test_{metric}_mean", f"test_{metric}_sd"
    ours = ENAS_METHODS[metric]
    controls = ("param_matched", "unconstrained_shrunk")
    if any(m not in methods or methods[m][key] is None for m in (ours, *controls)):
        return {"met": False, "reason": "a method has no retrained architecture"}
    picks_params = methods[ours].get("per_seed_params") or []
    within = bool(picks_params) and all(p <= target for p in picks_params)
    spread = max((methods[m][sd_key] or 0.0) for m in controls)
    margins = {m: methods[ours][key] - methods[m][key] for m in controls}
    beats = all(v > spread for v in margins.values())
    return {
        "method": ours,
        "target": target,
        "params": picks_params,
        "within_target": within,
        "margins": margins,
        "larger_sd": spread,
        "beats_controls": beats,
        "met": within and beats,
    }


PAPER_ACCURACY_ORDER: tuple[str, ...] = ("enas_accuracy", "enas_miou_plus", "enas_miou")
"""The paper's finding on pixel accuracy: the accuracy reward's pick first, then mIoU+'s,
then mIoU's."""
LARGE_KERNELS: frozenset[str] = frozenset({"conv5x5", "sep5x5"})


def paper_observations(methods: Mapping[str, Any], cells: Sequence[str]) -> dict[str, Any]:
    """Whether the paper's two observations hold in an evaluation's ``methods``.

    - ``accuracy_order``: the ENAS picks ordered by mean retrained test accuracy, against the
      paper's order; ``within_noise`` when two neighbours differ by less than the larger of
      their standard deviations over the seeds (then the order says nothing either way).
    - ``large_kernels``: the share of 5x5 cells (``conv5x5``, ``sep5x5``) among each method's
      picked layers, against the share a uniform draw has; the paper found the accuracy reward
      favouring 5x5 cells.

    Args:
        methods: ``summarise(...)["methods"]``.
        cells: the space's cell names, by index.
    """
    enas = [m for m in PAPER_ACCURACY_ORDER if m in methods and methods[m]["test_accuracy_mean"]]
    measured = sorted(enas, key=lambda m: -methods[m]["test_accuracy_mean"])
    within_noise = any(
        methods[a]["test_accuracy_mean"] - methods[b]["test_accuracy_mean"]
        < max(methods[a]["test_accuracy_sd"] or 0.0, methods[b]["test_accuracy_sd"] or 0.0)
        for a, b in itertools.pairwise(measured)
    )
    shares = {}
    for name, entry in methods.items():
        layers = [cells[i] for arch in entry["archs"] for i in arch]
        if layers:
            shares[name] = sum(c in LARGE_KERNELS for c in layers) / len(layers)
    uniform_share = sum(c in LARGE_KERNELS for c in cells) / len(cells) if cells else None
    accuracy_share = shares.get("enas_accuracy")
    return {
        "accuracy_order": {
            "paper": list(PAPER_ACCURACY_ORDER),
            "measured": measured,
            "holds": len(measured) == len(PAPER_ACCURACY_ORDER)
            and measured == list(PAPER_ACCURACY_ORDER),
            "within_noise": within_noise,
        },
        "large_kernels": {
            "share": shares,
            "uniform_share": uniform_share,
            "holds": accuracy_share is not None
            and uniform_share is not None
            and accuracy_share > uniform_share
            and all(accuracy_share >= v for k, v in shares.items() if k in ENAS_METHODS.values()),
        },
    }


def format_observations(paper: Mapping[str, Any]) -> list[str]:
    """The paper's observations in two lines."""
    order, kernels = paper["accuracy_order"], paper["large_kernels"]
    noise = " (within seed noise)" if order["within_noise"] else ""
    verdict = "holds" if order["holds"] else "does not hold"
    shares = ", ".join(f"{k} {v:.0%}" for k, v in kernels["share"].items())
    uniform = kernels["uniform_share"]
    return [
        f"paper's accuracy order {' > '.join(order['paper'])}: {verdict}; measured "
        f"{' > '.join(order['measured'])}{noise}",
        f"5x5 cells favoured by the accuracy reward: {'holds' if kernels['holds'] else 'no'}; "
        f"share of 5x5 cells: {shares}"
        + ("" if uniform is None else f" (a uniform draw: {uniform:.0%})"),
    ]


def format_table(summary: Mapping[str, Any]) -> list[str]:
    """Table 1 with the controls as extra columns: each method's retrained test metrics,
    mean ± sd over seeds, and its mean parameter count."""
    methods = summary["methods"]
    names = [m for m in METHODS if m in methods]
    width = max([20, *(len(n) + 2 for n in names)])  # a name never runs into the next
    lines = [f"{'metric':16}" + "".join(f"{n:>{width}}" for n in names)]
    for m in METRIC_NAMES:
        cells = []
        for n in names:
            mean, sd = methods[n][f"test_{m}_mean"], methods[n][f"test_{m}_sd"]
            cells.append(
                "-" if mean is None else f"{mean:.4f}" + ("" if sd is None else f" ± {sd:.4f}")
            )
        lines.append(f"{m:16}" + "".join(f"{c:>{width}}" for c in cells))
    lines.append(
        f"{'params':16}"
        + "".join(
            f"{methods[n]['params'] if methods[n]['params'] else '-':>{width}}" for n in names
        )
    )
    if any("channels" in methods[n] for n in names):  # a network trained at other widths
        widths = [
            ",".join("-" if c is None else str(c) for c in methods[n].get("channels", [])) or "-"
            for n in names
        ]
        lines.append(f"{'channels':16}" + "".join(f"{w:>{width}}" for w in widths))
    return lines
