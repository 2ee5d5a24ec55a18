"""What the API answers: pydantic models for every response body."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from storage.searches import SearchRecord
from supernet.fielddocs import described

log = logging.getLogger(__name__)

Status = Literal["queued", "running", "succeeded", "failed", "cancelling", "cancelled"]


@described
class Progress(BaseModel):
    """Where a running search is.

    Attributes:
        epoch: the ENAS epoch under way, 0-based (the page shows it 1-based).
        epochs: the search's epochs.
        phase: ``shared`` (training the supernet), ``controller`` (sampling and scoring
            architectures, REINFORCE updates) or ``derive`` (scoring the final policy's
            samples on the validation split).
        step: steps of the phase done.
        steps: steps of the phase.
        samples: architectures scored so far (the samples' rows).
    """

    epoch: int
    epochs: int
    phase: Literal["shared", "controller", "derive"]
    step: int
    steps: int
    samples: int
    fraction: float = Field(description="share of the whole search done, 0 to 1")


@described
class Best(BaseModel):
    """The best architecture so far.

    Attributes:
        arch: a cell index per encoder layer (the decoder mirrors it).
        reward: its reward: on one validation minibatch while the search runs, on the whole
            validation split once it has succeeded (the derive phase's pick).
    """

    arch: list[int]
    reward: float


@described
class Links(BaseModel):
    """Where the search's parts are.

    Attributes:
        self: this search.
        architectures: its scored architectures, paged.
        rewards: its reward curve.
        result: its result, once it has succeeded.
        cancel: POST here to cancel it.
        retrains: its architectures retrained from scratch.
        page: its web page (the same URL, asked for as HTML).
    """

    self: str
    architectures: str
    rewards: str
    result: str
    cancel: str
    retrains: str
    page: str


@described
class SearchOut(BaseModel):
    """A search.

    Attributes:
        id: its id (32 hex digits).
        owner: the account it belongs to (a user sees only their own; an admin, everyone's).
        name: the spec's name.
        status: ``queued``, ``running``, ``cancelling``, or how it ended: ``succeeded``,
            ``failed``, ``cancelled``.
        created_at, started_at, finished_at, updated_at: when it was submitted, first picked
            up by a dispatcher, ended, and last changed (UTC).
        progress: where it is (null before it starts).
        best: its best architecture so far (null before the first score).
        error: why it failed, one line (null unless failed).
        attempts: how many times a dispatcher has started it (more than 1 after a recovery).
        spec: the spec as submitted, the server's defaults filled in.
        links: where its parts are.
    """

    id: str
    owner: str
    name: str | None
    status: Status
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime
    progress: Progress | None
    best: Best | None
    error: str | None
    attempts: int
    spec: dict[str, Any]
    links: Links

    @classmethod
    def of(cls, record: SearchRecord) -> SearchOut:
        base = f"/searches/{record.id}"
        best = None
        if record.best_arch is not None and record.best_reward is not None:
            best = Best(arch=record.best_arch, reward=record.best_reward)
        return cls(
            id=record.id,
            owner=record.owner_name,
            name=record.name,
            status=record.status,  # type: ignore[arg-type]
            created_at=record.created_at,
            started_at=record.started_at,
            finished_at=record.finished_at,
            updated_at=record.updated_at,
            progress=_progress(record),
            best=best,
            error=record.error,
            attempts=record.attempts,
            spec=record.spec,
            links=Links(
                self=base,
                architectures=f"{base}/architectures",
                rewards=f"{base}/rewards",
                result=f"{base}/result",
                cancel=f"{base}/cancel",
                retrains=f"{base}/retrains",
                page=base,
            ),
        )


def _progress(record: SearchRecord) -> Progress | None:
    """The stored progress as the API shows it; None where there is none, or where the stored
    value is not a driver's report (a row written by hand or by older code): a search's page
    must not fail over its progress bar."""
    if not record.progress:
        return None
    try:
        p = Progress.model_validate({**record.progress, "fraction": 0.0})
    except ValidationError:
        log.warning("search %s: stored progress is not a progress report; shown as none", record.id)
        return None
    # Each epoch counts one unit (half shared training, half controller), derive one more.
    epochs = max(1, p.epochs)
    within = p.step / p.steps if p.steps else 0.0
    if p.phase == "derive":
        done = epochs + within
    else:
        done = p.epoch + (0.5 if p.phase == "controller" else 0.0) + 0.5 * within
    fraction = 1.0 if record.status == "succeeded" else min(1.0, done / (epochs + 1))
    return p.model_copy(update={"fraction": round(fraction, 4)})


@described
class SearchPage(BaseModel):
    """A page of searches.

    Attributes:
        items: the caller's searches (an admin's: everyone's), newest first.
    """

    items: list[SearchOut]
    next: str | None = Field(description="cursor of the next page (`after=`); null at the end")


@described
class ArchitectureOut(BaseModel):
    """One scored architecture (a row of the samples table).

    Attributes:
        id: its row id (stored order).
        phase: ``controller`` (a policy sample, scored on one validation minibatch) or
            ``derive`` (a final candidate, scored on the validation split).
        epoch: the ENAS epoch, 0-based (derive rows: the search's epoch count).
        step: the controller step within the epoch.
        index: the sample's place in its controller batch.
        arch: a cell index per encoder layer.
        reward: the search's reward for it (its ``accuracy``, ``miou`` or ``miou_plus``).
        accuracy, mean_precision, mean_recall, miou, miou_plus: its metrics on what it was
            scored on (docs/metrics.md).
        policy_version: the controller's update count when it was sampled.
        created_at: when it was stored (UTC).
    """

    id: int
    phase: Literal["controller", "derive"]
    epoch: int
    step: int
    index: int
    arch: list[int]
    reward: float
    accuracy: float
    mean_precision: float
    mean_recall: float
    miou: float
    miou_plus: float
    policy_version: int
    created_at: datetime
    params: int | None = Field(
        None, description="parameters of the architecture as a stand-alone network"
    )
    flops: int | None = Field(
        None,
        description="FLOPs of one forward pass of it on one image at the data set's size "
        "(2 per multiply-add)",
    )
    count: int = Field(
        1, description="samples this row stands for: 1, or with `fold` its architecture's"
    )


@described
class ArchitecturePage(BaseModel):
    """A page of a search's scored architectures.

    Attributes:
        items: the architectures, in the order asked for (``sort``, ``order``).
        next: the cursor of the next page (``after=``, with the same ``sort``); null at the
            end.
    """

    items: list[ArchitectureOut]
    next: str | None


@described
class FrontPointOut(BaseModel):
    """A sample on the size front: no other sample is as small with as high a reward.

    Attributes:
        id: its row id.
        arch: a cell index per encoder layer.
        phase: ``controller`` (scored on one validation minibatch) or ``derive`` (on the
            validation split).
        epoch: the ENAS epoch, 0-based (derive rows: the search's epoch count).
        cost: its size: parameters or FLOPs, as the front's ``cost`` says.
        reward: its reward.
    """

    id: int
    phase: Literal["controller", "derive"]
    epoch: int
    arch: list[int]
    cost: int
    reward: float


@described
class SizeFrontOut(BaseModel):
    """The Pareto front of reward against size: the best reward the search found at each
    size budget, smallest first.

    Attributes:
        cost: the size it is measured in: ``params`` or ``flops``.
        samples: the samples it was taken from (those with that size recorded).
        points: the samples on it, by increasing size (and reward).
    """

    cost: Literal["params", "flops"]
    samples: int
    points: list[FrontPointOut]


@described
class RewardPointOut(BaseModel):
    """One controller step of the reward curve (downsampled: the bucket of consecutive steps
    that ends at this one).

    Attributes:
        index: the step's 0-based position among all of the search's controller steps.
        epoch: the ENAS epoch, 0-based.
        step: the controller step within it.
        samples: architectures scored in it.
        mean_reward, max_reward: their mean and largest reward.
        best_so_far: the largest reward of the search up to this step.
    """

    index: int
    epoch: int
    step: int
    samples: int
    mean_reward: float
    max_reward: float
    best_so_far: float


@described
class RewardCurve(BaseModel):
    """The reward curve, or what is new of it since a cursor.

    Attributes:
        points: in step order.
        downsampled: the points are buckets of consecutive steps (more steps than
            ``max_points``).
        steps: the search's controller steps in all.
        next: the cursor (``after=``) that asks for the steps after these; null when there
            is no point yet.
    """

    points: list[RewardPointOut]
    downsampled: bool
    steps: int
    next: str | None


class EpochCells(BaseModel):
    epoch: int = Field(description="the controller phase's epoch, from 0")
    samples: int = Field(description="architectures the policy sampled in it")
    counts: list[list[int]] = Field(
        description="per layer, how many of them chose each cell (`cells` order)"
    )


@described
class CellDistribution(BaseModel):
    """What the policy learned: its choices per layer, epoch by epoch.

    Attributes:
        epochs: the controller phase's epochs that have samples, in epoch order.
    """

    cells: list[str] = Field(description="the space's cell names, by index")
    epochs: list[EpochCells]


@described
class ResultOut(BaseModel):
    """What a search found: the derive phase's pick.

    Attributes:
        arch: a cell index per encoder layer.
        reward: its reward on the validation split.
        params: its parameters as a stand-alone network.
    """

    arch: list[int]
    reward: float
    metrics: dict[str, Any] = Field(
        description="validation-split metrics of the pick: the best of `candidates` "
        "architectures on that split, so an optimistic estimate of its own score"
    )
    params: int
    candidates: int | None = Field(
        None, description="distinct architectures the derive phase scored on the validation split"
    )


@described
class RetrainOut(BaseModel):
    """An architecture of the search trained from scratch (``segnas retrain``) and tested.

    Attributes:
        id: its row id.
        rank: its place among the search's derive candidates (enas) or the baselines (random).
        arch: a cell index per encoder layer.
        epochs: epochs it was trained.
        params: its parameters.
        mean_precision, mean_recall, miou, miou_plus: test split metrics.
        error: why its training failed, one line.
        seconds: its training's wall time.
        created_at: when it was stored (UTC).
    """

    id: int
    source: Literal["enas", "random", "pareto"] = Field(
        description="enas: from the derive phase (rank 0: the result); random: a baseline; "
        "pareto: spread along the search's size front (rank 0: its smallest)"
    )
    rank: int
    arch: list[int]
    status: Literal["succeeded", "stopped", "failed"] = Field(
        description="stopped: ASHA ended the trial early (metrics of its last epoch)"
    )
    epochs: int
    params: int | None
    accuracy: float | None = Field(description="test split, as are the other four metrics")
    mean_precision: float | None
    mean_recall: float | None
    miou: float | None
    miou_plus: float | None
    shared_score: float | None = Field(
        description="its score under the search's shared weights (derive phase, validation)"
    )
    error: str | None
    seconds: float | None
    created_at: datetime


@described
class RetrainList(BaseModel):
    """A search's architectures retrained from scratch.

    Attributes:
        items: the enas ones by rank (0: the search's result), then the random baselines;
            empty until ``segnas retrain`` has run.
    """

    items: list[RetrainOut]


class DispatchersHealth(BaseModel):
    """The dispatchers' heartbeats in Redis (each dispatcher beats at every turn of its loop;
    a beat lapses after its lease time)."""

    alive: int = Field(description="dispatchers whose last heartbeat has not lapsed")
    last_heartbeat_seconds: float | None = Field(
        description="age of the newest heartbeat, in seconds; null when none is alive"
    )


@described
class Health(BaseModel):
    """``ok``; ``unavailable`` when the database or Redis does not answer; ``degraded`` when
    searches are to be run by dispatchers (``SEGNAS_EXPECT_DISPATCHERS``) and none has a live
    heartbeat: new searches would wait. Both are answered with 503.

    Attributes:
        status: ``ok``, ``degraded`` or ``unavailable`` (the last two answered with 503).
        database: ``ok``, or ``unavailable`` when it does not answer a query.
        redis: ``ok``, or ``Redis does not answer``.
    """

    status: Literal["ok", "degraded", "unavailable"]
    database: str
    redis: str
    dispatchers: DispatchersHealth | None = Field(
        None, description="present when the service expects dispatchers"
    )


@described
class Problem(BaseModel):
    """Every error body: one line, plus the field errors of a 422.

    Attributes:
        detail: what is wrong, in one line.
        errors: when a parameter or the body failed validation (422), each field's error:
            ``loc`` (where the field is, as a list of strings) and ``msg``; absent otherwise.
    """

    detail: str
    errors: list[dict[str, Any]] | None = None


# /evaluations: the rows of `segnas evaluate` (and `segnas reproduce --seeds`), read-only.


@described
class EvaluationMethodOut(BaseModel):
    """One method's picks (one per seed) and their retrained test metrics over the seeds.

    Attributes:
        archs: its pick of every seed, in seed order (a cell index per encoder layer).
        retrained: how many of the picks have retrained test metrics.
        params: the mean parameter count of the retrained picks, rounded; null when none
            has one.
        test_accuracy_mean, test_mean_precision_mean, test_mean_recall_mean: the metric the
            name says, on the test split, of the picks retrained from scratch (each pick's
            mean over its training seeds; docs/metrics.md), mean over the seeds; null when
            no pick is retrained.
        test_miou_mean, test_miou_plus_mean: the metric the name says, on the test split, of
            the picks retrained from scratch (each pick's mean over its training seeds;
            docs/metrics.md), mean over the seeds; null when no pick is retrained.
        test_accuracy_sd, test_mean_precision_sd, test_mean_recall_sd: the sample standard
            deviation over the seeds of the metric the name says; null with fewer than two
            retrained picks.
        test_miou_sd, test_miou_plus_sd: the sample standard deviation over the seeds of the
            metric the name says; null with fewer than two retrained picks.
    """

    archs: list[list[int]]
    retrained: int
    params: int | None
    test_accuracy_mean: float | None
    test_accuracy_sd: float | None
    test_mean_precision_mean: float | None
    test_mean_precision_sd: float | None
    test_mean_recall_mean: float | None
    test_mean_recall_sd: float | None
    test_miou_mean: float | None
    test_miou_sd: float | None
    test_miou_plus_mean: float | None
    test_miou_plus_sd: float | None


@described
class EvaluationTau(BaseModel):
    """Per supernet: ``enas`` is the spec's reward's, ``uniform`` random_ws's; the other
    rewards' supernets under their method's name (absent in older evaluations).

    The values sum up Kendall's tau between the uniformly drawn architectures' shared-weight
    scores (validation split) and their retrained test scores, in the summary's ``metric``,
    one tau per seed: its mean over the seeds in ``kendall_tau``, its standard deviation in
    ``kendall_tau_sd``.

    Attributes:
        enas: the ENAS supernet of the spec's reward (of the evaluation's first reward if
            it has no search with the spec's); null when no seed gave a tau (in
            ``kendall_tau_sd``: fewer than two).
        uniform: random_ws's supernet (its shared weights trained on uniformly drawn
            architectures); null when no seed gave a tau (in ``kendall_tau_sd``:
            fewer than two).
        enas_accuracy, enas_miou, enas_miou_plus: the ENAS supernet of the reward the name
            says, when it is not the one in ``enas``; null when it is, when the evaluation has
            no search with that reward, or when no seed gave a tau (in ``kendall_tau_sd``:
            fewer than two).
    """

    enas: float | None
    uniform: float | None
    enas_accuracy: float | None = None
    enas_miou: float | None = None
    enas_miou_plus: float | None = None


@described
class EvaluationGroundTruth(BaseModel):
    """How well two trainings of the same architectures agree (the ceiling for tau).

    Attributes:
        tau_per_pair: per pair of training seeds (``"0-1"``), Kendall's tau between the
            rankings of the uniformly drawn architectures that the two give.
        architectures: the uniformly drawn architectures with a test score from every
            training seed (those ``within_sd`` and ``between_sd`` are computed over).
    """

    tau: float | None = Field(description="Kendall tau between training seeds, mean over pairs")
    tau_per_pair: dict[str, float]
    within_sd: float | None = Field(description="an architecture's sd across training seeds")
    between_sd: float | None = Field(description="sd between architectures' mean scores")
    architectures: int


@described
class EvaluationGoal(BaseModel):
    """The issue's goal: the best reward's pick beats random_ws and its own parameter-matched
    control by more than the larger of their standard deviations, and the ENAS supernet's
    tau >= 0.6.

    All but ``met`` and ``reason`` are null when the goal could not be judged.

    Attributes:
        met: whether the goal is met (``beats_controls`` and ``tau_met``); false too when it
            could not be judged.
        reason: why it could not be judged (a method has no retrained architecture); null
            when it was.
        best_enas: the ENAS method whose picks have the best mean retrained test score in the
            summary's ``metric``.
        matched_control: its own parameter-matched control (``param_matched_<reward>``;
            ``param_matched`` in evaluations without one).
        margins: per control (``random_ws`` and ``matched_control``), ``best_enas``'s mean
            test score minus the control's.
        larger_sd: the larger of the two controls' standard deviations over the seeds (a
            missing one counts as 0).
        beats_controls: whether every margin is larger than ``larger_sd``.
        tau_enas: the ENAS supernet's Kendall tau (``kendall_tau.enas``; null when it has
            none).
        tau_goal: the least tau the goal asks for (0.6).
        tau_met: whether ``tau_enas`` is at least ``tau_goal``.
    """

    met: bool
    reason: str | None = None
    best_enas: str | None = None
    matched_control: str | None = None
    margins: dict[str, float] | None = None
    larger_sd: float | None = None
    beats_controls: bool | None = None
    tau_enas: float | None = None
    tau_goal: float | None = None
    tau_met: bool | None = None


@described
class EvaluationSummaryOut(BaseModel):
    """What an evaluation found: Table 1, Kendall's tau and the goal.

    Attributes:
        metric: the metric the rankings and the goal are judged on (the spec's reward).
        seeds: the evaluation seeds summarised.
        architectures_retrained: distinct architectures with retrained test metrics (the
            picks and the uniformly drawn ones).
        methods: per method (``enas_<reward>``, ``random_ws``, ``largest``,
            ``param_matched``, ``param_matched_<reward>``): its picks and their retrained
            test metrics.
        kendall_tau: per supernet, Kendall's tau of its shared-weight ranking of the
            uniformly drawn architectures against their retrained one, mean over the seeds.
        kendall_tau_sd: the same taus' standard deviation over the seeds.
        goal: whether the issue's goal is met, and by how much.
        ground_truth: how well the training seeds agree with each other; null when the
            summary has none (older evaluations).
    """

    metric: str
    seeds: int
    architectures_retrained: int
    methods: dict[str, EvaluationMethodOut]
    kendall_tau: EvaluationTau
    kendall_tau_sd: EvaluationTau
    goal: EvaluationGoal
    ground_truth: EvaluationGroundTruth | None = None
    paper: dict[str, Any] | None = Field(
        None, description="the paper's observations checked (reward order, 5x5 cells)"
    )


@described
class EvaluationSearchOut(BaseModel):
    """One of an evaluation's searches.

    Attributes:
        seed: the evaluation seed it was run for (0-based).
        method: ``enas_<reward>`` (an ENAS search with that reward) or ``random_ws`` (random
            search with weight sharing).
        search_id: the search's id (``/searches/{search_id}``).
        page: the search's URL (its web page, asked for as HTML).
    """

    slot: str = Field(description="SEED/METHOD")
    seed: int
    method: str
    search_id: str
    status: Status | None = Field(description="null if the search row is gone")
    page: str


@described
class EvaluationProgress(BaseModel):
    """How far an evaluation is.

    Attributes:
        searches_planned: the searches it runs: per seed, one per reward and one random_ws.
        searches_finished: those of its searches so far that have ended (``succeeded``,
            ``failed`` or ``cancelled``).
        trainings_stored: retrainings stored so far, one per architecture and training seed
            (failed ones included).
    """

    searches_planned: int
    searches_finished: int
    trainings_stored: int


@described
class EvaluationOut(BaseModel):
    """A search-phase evaluation (``segnas evaluate``).

    Attributes:
        id: its id (32 hex digits, a digest of the spec and the settings).
        name: the spec's name.
        status: ``running`` (since it was last started), or how its last run ended:
            ``succeeded``, ``failed``.
        created_at: when it was first started (UTC).
        updated_at: when it last changed (UTC).
        error: why it failed, one line (null unless failed).
        settings: what ``segnas evaluate`` was asked to run (seeds, rewards, uniform
            architectures, epochs, training seeds, ...).
        progress: how far it is.
        searches: the searches it has created so far, by ``slot`` (sorted as text).
        summary: what it found, as of its last success; null before one, after a failure, or
            when written by a version this server cannot read.
        page: its web page (the same URL, asked for as HTML).
    """

    id: str
    name: str | None
    status: Literal["running", "succeeded", "failed"]
    created_at: datetime
    updated_at: datetime
    error: str | None
    settings: dict[str, Any]
    progress: EvaluationProgress
    searches: list[EvaluationSearchOut]
    summary: EvaluationSummaryOut | None
    page: str


@described
class EvaluationList(BaseModel):
    """The newest evaluations.

    Attributes:
        items: newest first (at most ``limit``); none for a user who is not an admin (the
            evaluations are the local admin's).
    """

    items: list[EvaluationOut]


VALIDATION_ERROR = {
    400: {"model": Problem, "description": "a Host this server does not answer to"},
    422: {
        "model": Problem,
        "description": "a parameter or the body is invalid: `detail` says what in one line, "
        "`errors` lists each field (`loc`, `msg`)",
    },
    503: {"model": Problem, "description": "the database is unavailable; try again shortly"},
}
"""The errors every route can answer, as the app's handlers write them (FastAPI's default 422
schema, an array in ``detail``, is not what this API answers)."""

BODY_GUARD = {
    413: {"model": Problem, "description": "a body over this server's size limit"},
    415: {"model": Problem, "description": "a body not sent as JSON (application/json)"},
}
"""What any request with a body may be answered before a route sees it (``service.limits``)."""

CROSS_SITE = {
    403: {
        "model": Problem,
        "description": "a cross-site request: another Origin, or neither JSON nor X-Requested-With",
    }
}
"""What a state-changing route answers to a request a cross-site page could have sent."""
