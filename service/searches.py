"""The ``/searches`` resource: submit, list, read, page samples, reward curve, result, cancel,
delete."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Annotated, Literal

from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from starlette.datastructures import State

from errors import DatasetError
from jobqueue import QueueUnavailableError
from searchspec.budget import over_budget
from searchspec.spec import SearchSpec
from service.answers import AnswerCache
from service.auth import UNAUTHORIZED, CurrentUser, UserOrPage, check_owner, owned_search
from service.blocking import blocking
from service.cursors import (
    CursorError,
    decode_sample_cursor,
    decode_search_cursor,
    encode_sample_cursor,
    encode_search_cursor,
)
from service.logs import LogChunk, read_log
from service.pages import WEB_DIR, wants_html
from service.quotas import QuotaExceededError, check_active, count_submission
from service.schemas import (
    CROSS_SITE,
    VALIDATION_ERROR,
    ArchitecturePage,
    CellDistribution,
    EpochCells,
    Problem,
    ResultOut,
    RetrainList,
    RetrainOut,
    RewardCurve,
    SearchOut,
    SearchPage,
    SizeFrontOut,
    Status,
)
from storage.accounts import Principal
from storage.leases import CancelOutcome
from storage.retrains import RetrainStore, StoredRetrainRecord
from storage.samples import MAX_CELL, MAX_EPOCH, MAX_LAYER, SampleQuery, SampleSort, cursor_of
from storage.searches import (
    FINISHED_STATUSES,
    ResultRecord,
    SearchNotFoundError,
    SearchRecord,
)
from supernet.data.layout import check_layout
from supernet.space import CELL_NAMES

log = logging.getLogger(__name__)
router = APIRouter(
    prefix="/searches", tags=["searches"], responses={**VALIDATION_ERROR, **UNAUTHORIZED}
)

IdempotencyKey = Annotated[
    str | None,
    Header(
        min_length=1,
        max_length=200,
        pattern=r"^[\x21-\x7e]+$",
        description="retries with the same key return the same search",
    ),
]
DEFAULT_CURVE_POINTS = 2000
MAX_CURVE_POINTS = 20_000
NOT_FOUND = {404: {"model": Problem, "description": "no search of yours has this id"}}


# What a search's ETag stands for besides its row's revision: the shape of the representation,
# so that a server whose SearchOut changed never answers 304 to a copy in the older shape.
_SHAPE = hashlib.blake2b(
    json.dumps(SearchOut.model_json_schema(), sort_keys=True).encode(), digest_size=4
).hexdigest()


def _etag(revision: int) -> str:
    """The body of a search follows from its row alone, which changes only with its revision."""
    return f'W/"{revision}.{_SHAPE}"'


def _search_json(record: SearchRecord) -> tuple[bytes, str]:
    return SearchOut.of(record).model_dump_json().encode(), _etag(record.revision)


@router.post(
    "",
    status_code=201,
    response_model=SearchOut,
    responses={
        200: {"model": SearchOut, "description": "replay of an Idempotency-Key"},
        409: {"model": Problem, "description": "Idempotency-Key reused with another spec"},
        400: {"model": Problem, "description": "the body is not UTF-8 JSON, or a bad Host"},
        **CROSS_SITE,
        413: {"model": Problem, "description": "body too large"},
        422: {"model": Problem, "description": "invalid spec, or over this server's budget"},
        429: {
            "model": Problem,
            "description": "over your queued-and-running or submissions-a-minute limit",
            "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "seconds"}},
        },
    },
)
async def submit_search(
    spec: SearchSpec, request: Request, user: CurrentUser, idempotency_key: IdempotencyKey = None
) -> Response:
    """Queue a search for ``spec`` (the schema of ``configs/*.yaml``), owned by the caller."""
    state = request.app.state
    root = getattr(spec.dataset, "root", None)
    if root is not None and not state.settings.allows_root(Path(root)):
        # The allowed folders are the server's paths: named by the setting, not listed.
        raise HTTPException(
            422,
            f"dataset.root {str(root)!r} is outside the data folders this server allows "
            "(its operator sets them: SEGNAS_DATA_ROOTS)",
        )
    if root is not None:
        # What the search would find missing in its first seconds, said now (a 422, not a
        # search that fails after it starts). The path is the caller's own, inside the folders.
        try:
            await blocking(request, check_layout, spec.dataset)
        except DatasetError as e:
            raise HTTPException(422, f"dataset.root: {e}") from None
    if (refused := over_budget(spec, state.settings.budget)) is not None:
        raise HTTPException(422, refused)
    try:
        record, created = await blocking(request, _submit, state, spec, user, idempotency_key)
    except QuotaExceededError as e:
        raise HTTPException(429, e.detail, headers={"Retry-After": str(e.retry_after)}) from None
    body, etag = _search_json(record)
    headers = {"Location": f"/searches/{record.id}", "ETag": etag}
    if not created:
        headers["Idempotent-Replayed"] = "true"
    return Response(body, 201 if created else 200, headers, media_type="application/json")


def _submit(
    state: State, spec: SearchSpec, user: Principal, idempotency_key: str | None
) -> tuple[SearchRecord, bool]:
    """Raises:
    QuotaExceededError: over the user's submission rate, or active searches (a replay of
        an Idempotency-Key counts towards the rate only)."""
    body, quotas = spec.model_dump(mode="json"), state.settings.quotas
    count_submission(state.queue.client, state.queue.prefix, user, quotas)
    if idempotency_key is not None:
        replayed = state.store.replay(user.user_id, idempotency_key, body)
        if replayed is not None:
            return replayed, False
    check_active(state.store, user, quotas)
    record, created = state.store.submit(
        body, name=spec.name, idempotency_key=idempotency_key, owner_id=user.user_id
    )
    if created:
        try:
            state.queue.enqueue(record.id)
        except QueueUnavailableError as e:
            # The row is the truth: a dispatcher's reconciliation enqueues it once Redis is back.
            log.warning("search %s stays queued in the database only: %s", record.id, e)
    return record, created


@router.get("", response_model=SearchPage)
async def list_searches(
    request: Request,
    user: CurrentUser,
    status: Status | None = None,
    after: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=200,
            pattern=r"^[A-Za-z0-9_-]+$",
            description="the `next` of the previous page (opaque)",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    q: Annotated[
        str | None,
        Query(
            min_length=1,
            max_length=100,
            pattern=r"^[^\x00-\x1f]+$",
            description="only those whose name contains this (any case)",
        ),
    ] = None,
) -> SearchPage:
    """The caller's searches (an admin's: everyone's), newest first, a page at a time."""
    try:
        before = None if after is None else decode_search_cursor(after)
    except CursorError as e:
        raise HTTPException(422, str(e)) from None
    store = request.app.state.store
    rows = await blocking(
        request,
        store.page,
        status=status,
        before=before,
        limit=limit + 1,
        owner_id=None if user.is_admin else user.user_id,
        name_contains=q,
    )
    items = [SearchOut.of(r) for r in rows[:limit]]
    more = len(rows) > limit
    return SearchPage(
        items=items,
        next=encode_search_cursor(items[-1].created_at, items[-1].id) if more else None,
    )


@router.get(
    "/{search_id}",
    response_model=SearchOut,
    responses={**NOT_FOUND, 304: {"description": "unchanged since the ETag given"}},
)
async def get_search(
    search_id: str,
    request: Request,
    user: UserOrPage,
    if_none_match: Annotated[str | None, Header()] = None,
) -> Response:
    """One search. A browser (``Accept: text/html``) gets its web page instead (without a
    token, on a server that asks for one, the page whatever the id: it signs in first)."""
    store, html = request.app.state.store, wants_html(request)
    if user is None:
        return FileResponse(WEB_DIR / "search.html", media_type="text/html")
    if if_none_match is not None and not html:
        # Most polls find the search unchanged: its revision alone says so, without the row.
        revision, owner_id = await blocking(request, store.revision_and_owner, search_id)
        check_owner(user, owner_id, search_id)
        etag = _etag(revision)
        if etag in _etags(if_none_match):
            return Response(status_code=304, headers={"ETag": etag})
    try:
        record = await blocking(request, owned_search, store, user, search_id)
    except SearchNotFoundError:
        if not html:
            raise
        # Still the page (it says "no such search"), under the status the contract gives.
        return FileResponse(WEB_DIR / "search.html", status_code=404, media_type="text/html")
    if html:
        return FileResponse(WEB_DIR / "search.html", media_type="text/html")
    body, etag = _search_json(record)
    return Response(body, headers={"ETag": etag}, media_type="application/json")


@router.get("/{search_id}/architectures", response_model=ArchitecturePage, responses=NOT_FOUND)
async def list_architectures(
    search_id: str,
    request: Request,
    user: CurrentUser,
    after: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9A-Za-z_-]{1,200}$",
            description="the `next` of the previous page (of the same `sort`)",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    order: Annotated[
        Literal["asc", "desc"], Query(description="`desc`: largest first (for `id`, newest)")
    ] = "asc",
    sort: Annotated[
        SampleSort, Query(description="the column the page is ordered by; ties by `id`")
    ] = "id",
    phase: Annotated[
        Literal["controller", "derive"] | None, Query(description="only samples of that phase")
    ] = None,
    epoch: Annotated[
        int | None, Query(ge=0, le=MAX_EPOCH, description="only that epoch (0-based)")
    ] = None,
    cell: Annotated[
        int | None,
        Query(ge=0, le=MAX_CELL, description="only architectures with this cell index"),
    ] = None,
    layer: Annotated[
        int | None,
        Query(ge=0, le=MAX_LAYER, description="with `cell`: at this layer (0-based) only"),
    ] = None,
    fold: Annotated[
        bool,
        Query(
            description="with `phase=derive`: one row per distinct architecture, `count` its "
            "samples"
        ),
    ] = False,
) -> Response:
    """The scored architectures: in the order they were stored (``order=desc``: newest first)
    or by a metric, filtered by phase, epoch and cell, the derive phase's duplicates folded."""
    store = request.app.state.store
    if fold and phase != "derive":
        raise HTTPException(422, "fold: only with phase=derive (its duplicates are folded)")
    if layer is not None and cell is None:
        raise HTTPException(422, "layer: only with cell (the cell to look for at that layer)")
    try:
        cursor = None if after is None else decode_sample_cursor(after, sort)
    except CursorError as e:
        raise HTTPException(422, str(e)) from None

    def read() -> bytes:
        record = owned_search(store, user, search_id)  # 404 for an unknown id, not a page
        layers = int((record.spec.get("space") or {}).get("layers") or 0)
        if layer is not None and layer >= layers:
            raise HTTPException(422, f"layer: the search has {layers} layers (0 to {layers - 1})")
        query = SampleQuery(
            sort=sort, descending=order == "desc", phase=phase, epoch=epoch, cell=cell,
            layer=layer, layers=layers, fold=fold,
        )  # fmt: skip
        rows = store.sample_page(search_id, after=cursor, limit=limit + 1, query=query)
        following = None
        if len(rows) > limit:
            following = encode_sample_cursor(sort, *cursor_of(rows[limit - 1], sort))
        # Validated once as a page, then serialised, here: off the event loop (a page may
        # hold 1,000 rows).
        page = ArchitecturePage.model_validate({"items": rows[:limit], "next": following})
        return page.model_dump_json().encode()

    return Response(await blocking(request, read), media_type="application/json")


@router.get("/{search_id}/rewards", response_model=RewardCurve, responses=NOT_FOUND)
async def reward_curve(
    search_id: str,
    request: Request,
    user: CurrentUser,
    after: Annotated[
        str | None,
        Query(
            pattern=r"^[0-9]{1,9}\.[0-9]{1,9}$",
            description="the `next` of an earlier answer: only the steps after it",
        ),
    ] = None,
    max_points: Annotated[
        int, Query(ge=1, le=MAX_CURVE_POINTS, description="downsample to at most this many")
    ] = DEFAULT_CURVE_POINTS,
) -> Response:
    """Mean reward of each controller step, and the best reward so far; read from the
    per-step aggregate, downsampled to ``max_points``, or only what is new after ``after``."""
    store = request.app.state.store
    cursor = None if after is None else tuple(int(x) for x in after.split("."))

    answers: AnswerCache = request.app.state.curve_answers

    def read() -> bytes:
        owned_search(store, user, search_id)  # 404 for an unknown id, not an empty curve
        if cursor is None:
            # A whole curve that has not changed is answered with the bytes made of it before:
            # reading, building and serialising 2,000 points was most of the answer's time.
            cached = answers.get((search_id, max_points, *store.reward_counts(search_id)))
            if cached is not None:
                return cached
        curve = store.reward_steps(search_id, after=cursor, max_points=max_points)
        last = curve.points[-1] if curve.points else None
        answer = RewardCurve.model_validate(
            {
                "points": curve.points,
                "downsampled": curve.downsampled,
                "steps": curve.steps,
                "next": f"{last.epoch}.{last.step}" if last else after,
            },
            from_attributes=True,
        )
        body = answer.model_dump_json().encode()  # off the event loop: up to 20,000 points
        if cursor is None:  # under the counts it was read at, which a step since only raises
            answers.put((search_id, max_points, curve.steps, curve.samples), body)
        return body

    return Response(await blocking(request, read), media_type="application/json")


@router.get("/{search_id}/front", response_model=SizeFrontOut, responses=NOT_FOUND)
async def size_front(
    search_id: str,
    request: Request,
    user: CurrentUser,
    cost: Annotated[
        Literal["params", "flops"], Query(description="the size: parameters or FLOPs")
    ] = "params",
    phase: Annotated[
        Literal["controller", "derive"] | None, Query(description="only samples of that phase")
    ] = None,
) -> Response:
    """The samples that no other beats on both reward and size (the Pareto front the page
    draws over its scatter), from every sample of the search, not a page of them."""
    store = request.app.state.store
    answers: AnswerCache = request.app.state.front_answers

    def read() -> bytes:
        record = owned_search(store, user, search_id)
        # The front groups every sample of the search: an answer is kept until the row or
        # its samples change (a finished search's, for good).
        key = (search_id, cost, phase, record.revision, store.count_samples(search_id))
        cached = answers.get(key)
        if cached is not None:
            return cached
        front = store.size_front(search_id, cost=cost, phase=phase)
        body = SizeFrontOut.model_validate(front, from_attributes=True).model_dump_json().encode()
        answers.put(key, body)
        return body

    return Response(await blocking(request, read), media_type="application/json")


@router.get("/{search_id}/cells", response_model=CellDistribution, responses=NOT_FOUND)
async def cell_distribution(
    search_id: str, request: Request, user: CurrentUser
) -> CellDistribution:
    """How often the policy chose each cell at each layer, per epoch of the controller phase
    (the page's heat map): what it learned, beyond its one pick."""
    store = request.app.state.store

    def read() -> tuple[list[str], dict[int, list[list[int]]]]:
        record = owned_search(store, user, search_id)
        # As stored (a spec of an older version need not validate today): the space's names.
        cells = list((record.spec.get("space") or {}).get("cells") or CELL_NAMES)
        return cells, store.cell_counts(search_id, len(cells))

    cells, counts = await blocking(request, read)
    epochs = [
        EpochCells(epoch=epoch, samples=sum(grid[0]), counts=grid) for epoch, grid in counts.items()
    ]
    return CellDistribution(cells=cells, epochs=epochs)


@router.get(
    "/{search_id}/result",
    response_model=ResultOut,
    responses={**NOT_FOUND, 409: {"model": Problem, "description": "not finished"}},
)
async def get_result(search_id: str, request: Request, user: CurrentUser) -> ResultOut:
    """The best derived architecture with its validation metrics and parameter count."""
    store = request.app.state.store

    def read() -> tuple[SearchRecord, ResultRecord | None]:
        record = owned_search(store, user, search_id)
        return record, store.result(search_id) if record.status == "succeeded" else None

    record, result = await blocking(request, read)
    if result is None:
        if record.status in FINISHED_STATUSES:
            raise HTTPException(409, f"search {search_id} ended {record.status}: no result")
        raise HTTPException(409, f"search {search_id} is {record.status}: no result yet")
    return ResultOut.model_validate(result, from_attributes=True)


@router.get("/{search_id}/log", response_model=LogChunk, responses=NOT_FOUND)
async def search_log(
    search_id: str,
    request: Request,
    user: CurrentUser,
    offset: Annotated[
        int | None,
        Query(
            ge=0,
            le=2**62,
            description="a byte offset: the `next` of the previous chunk; "
            "without it, the log's last 64 KiB",
        ),
    ] = None,
) -> LogChunk:
    """The search's driver log (progress per epoch, recoveries, errors), a chunk at a time;
    the page polls it with the `next` of the chunk before."""
    state = request.app.state

    def read() -> LogChunk:
        owned_search(state.store, user, search_id)
        path = state.settings.data_dir / "logs" / f"{search_id}.log"
        return read_log(path, offset, state.settings.data_dir)

    return await blocking(request, read)


@router.get("/{search_id}/retrains", response_model=RetrainList, responses=NOT_FOUND)
async def list_retrains(search_id: str, request: Request, user: CurrentUser) -> RetrainList:
    """Its architectures retrained from scratch, with test metrics: the ENAS ones by rank
    (0 is the search's result), then the random baselines. Empty until ``segnas retrain``."""
    store = request.app.state.store

    def read() -> list[StoredRetrainRecord]:
        owned_search(store, user, search_id)
        return RetrainStore(store).list(search_id)

    rows = await blocking(request, read)
    return RetrainList(items=[RetrainOut.model_validate(r, from_attributes=True) for r in rows])


@router.post(
    "/{search_id}/cancel",
    status_code=202,
    response_model=SearchOut,
    responses={
        **NOT_FOUND,
        **CROSS_SITE,
        409: {"model": Problem, "description": "already finished"},
    },
)
async def cancel_search(search_id: str, request: Request, user: CurrentUser) -> SearchOut:
    """Cancel: a queued search at once; a running one at its driver's next step boundary."""
    state = request.app.state

    def cancel() -> tuple[CancelOutcome, SearchRecord]:
        owned_search(state.store, user, search_id)
        return state.leases.request_cancel(search_id), state.store.get(search_id)

    outcome, record = await blocking(request, cancel)
    if outcome is CancelOutcome.FINISHED:
        raise HTTPException(409, f"search {search_id} has already finished ({record.status})")
    return SearchOut.of(record)


@router.delete(
    "/{search_id}",
    status_code=204,
    responses={
        **NOT_FOUND,
        **CROSS_SITE,
        409: {"model": Problem, "description": "running: being cancelled, delete it after"},
    },
)
async def delete_search(search_id: str, request: Request, user: CurrentUser) -> Response:
    """Remove a search: its rows, checkpoints, retrained weights and log. A queued one is
    cancelled first; a running one is told to stop and answers 409 until it has."""
    state = request.app.state

    def remove() -> CancelOutcome:
        record = owned_search(state.store, user, search_id)
        if record.status not in FINISHED_STATUSES:
            outcome = state.leases.request_cancel(search_id)
            if outcome is CancelOutcome.CANCELLING:
                return outcome
        paths = state.store.delete(search_id)
        log_file = state.settings.data_dir / "logs" / f"{search_id}.log"
        _remove_files([*map(Path, paths), log_file], state.settings.data_dir)
        return CancelOutcome.FINISHED

    if await blocking(request, remove) is CancelOutcome.CANCELLING:
        raise HTTPException(
            409,
            f"search {search_id} is running: it is being cancelled now; delete it again once "
            "its status is cancelled",
        )
    return Response(status_code=204)


def _remove_files(paths: list[Path], data_dir: Path) -> None:
    """Unlink the files that lie in the data folder (a path elsewhere, e.g. on a cluster
    node's own disk, is left and logged)."""
    root = data_dir.resolve()
    for path in paths:
        try:
            target = path.resolve()
            if not target.is_relative_to(root):
                log.warning("left %s: outside the data folder %s", target, root)
                continue
            target.unlink(missing_ok=True)
        except OSError as e:
            log.warning("could not remove %s: %s", path, e.strerror)


def _etags(header: str) -> set[str]:
    tags = {t.strip() for t in header.split(",")}
    return tags | {t.removeprefix("W/") for t in tags} | {f"W/{t}" for t in tags}
