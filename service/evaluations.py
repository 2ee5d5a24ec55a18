"""The ``/evaluations`` resource: the search-phase evaluations that ``segnas evaluate`` (or
``segnas reproduce --seeds``) ran, read-only: their searches, progress and Table 1."""

from __future__ import annotations

import logging
from typing import Annotated

from fastapi import APIRouter, HTTPException, Query, Request, Response
from fastapi.responses import FileResponse
from pydantic import ValidationError

from service.auth import UNAUTHORIZED, CurrentUser, UserOrPage
from service.blocking import blocking
from service.pages import WEB_DIR, wants_html
from service.schemas import (
    VALIDATION_ERROR,
    EvaluationList,
    EvaluationOut,
    EvaluationProgress,
    EvaluationSearchOut,
    EvaluationSummaryOut,
    Problem,
)
from storage.evaluations import EvaluationRecord, EvaluationStore
from storage.searches import FINISHED_STATUSES, SearchStore

log = logging.getLogger(__name__)
router = APIRouter(
    prefix="/evaluations", tags=["evaluations"], responses={**VALIDATION_ERROR, **UNAUTHORIZED}
)
NOT_FOUND = {404: {"model": Problem, "description": "no evaluation has this id"}}


def _outs(store: SearchStore, records: list[EvaluationRecord]) -> list[EvaluationOut]:
    """The evaluations' representations (blocking: two statements for all of them, their
    searches' statuses and their trainings' counts)."""
    evaluations = EvaluationStore(store)
    statuses = evaluations.search_statuses(records)
    trainings = evaluations.trainings_counts([r.id for r in records])
    return [_out(r, statuses, trainings[r.id]) for r in records]


def _out(record: EvaluationRecord, statuses: dict[str, str], trainings: int) -> EvaluationOut:
    searches = []
    for slot, search_id in sorted(record.searches.items()):
        seed, _, method = slot.partition("/")
        status = statuses.get(search_id)  # None: the search was deleted since
        searches.append(
            EvaluationSearchOut(
                slot=slot,
                seed=int(seed),
                method=method,
                search_id=search_id,
                status=status,
                page=f"/searches/{search_id}",
            )
        )
    settings = record.settings
    planned = int(settings.get("seeds", 0)) * (len(settings.get("rewards", ())) + 1)
    summary = None
    if record.summary is not None:
        try:
            summary = EvaluationSummaryOut.model_validate(record.summary)
        except ValidationError as e:  # a summary of another version: the rest still answers
            log.warning("evaluation %s: summary not shown: %s", record.id, e.errors()[:1])
    return EvaluationOut(
        id=record.id,
        name=record.spec.get("name"),
        status=record.status,
        created_at=record.created_at,
        updated_at=record.updated_at,
        error=record.error,
        settings=settings,
        progress=EvaluationProgress(
            searches_planned=planned,
            searches_finished=sum(s.status in FINISHED_STATUSES for s in searches),
            trainings_stored=trainings,
        ),
        searches=searches,
        summary=summary,
        page=f"/evaluations/{record.id}",
    )


@router.get("", response_model=EvaluationList)
async def list_evaluations(
    request: Request, user: CurrentUser, limit: Annotated[int, Query(ge=1, le=50)] = 10
) -> EvaluationList:
    """The newest evaluations, newest first. They are the command line's (``segnas
    evaluate``), whose searches the local admin owns: admins see them, other users none."""
    if not user.is_admin:
        return EvaluationList(items=[])
    store: SearchStore = request.app.state.store

    def read() -> list[EvaluationOut]:
        return _outs(store, EvaluationStore(store).latest(limit))

    return EvaluationList(items=await blocking(request, read))


@router.get("/{evaluation_id}", response_model=EvaluationOut, responses=NOT_FOUND)
async def get_evaluation(
    evaluation_id: str, request: Request, response: Response, user: UserOrPage
) -> Response | EvaluationOut:
    """One evaluation. A browser (``Accept: text/html``) gets its web page instead."""
    response.headers["Vary"] = "Accept"
    if wants_html(request):
        # One URL, two representations: caches must key on Accept.
        return FileResponse(
            WEB_DIR / "evaluation.html", media_type="text/html", headers={"Vary": "Accept"}
        )
    if user is None or not user.is_admin:  # None: a page, handled above
        raise HTTPException(404, "no evaluation has this id")
    store: SearchStore = request.app.state.store

    def read() -> EvaluationOut | None:
        record = EvaluationStore(store).get(evaluation_id)
        return None if record is None else _outs(store, [record])[0]

    found = await blocking(request, read) if len(evaluation_id) == 32 else None
    if found is None:
        raise HTTPException(404, "no evaluation has this id")
    return found
