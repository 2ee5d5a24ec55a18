"""Who is calling: bearer tokens, the signed-in user, and ``GET /me``.

With ``auth: required`` (``SEGNAS_AUTH``; ``segnas serve`` turns it on for any address but
loopback) every ``/searches`` and ``/evaluations`` route needs ``Authorization: Bearer
TOKEN``, and answers 401 without one or with a token that is unknown or revoked. With
``auth: off`` (``segnas serve`` on 127.0.0.1 only, as ``make demo`` runs it) every request
acts as the local admin (``storage.models.LOCAL_ADMIN``).

A user sees their own searches only; another user's answers 404, as an id that does not
exist would, so that ids reveal nothing. Admins see everything.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field

from service.blocking import blocking
from service.pages import wants_html
from service.schemas import Problem
from storage.accounts import AccountStore, Principal
from storage.searches import SearchNotFoundError, SearchRecord, SearchStore
from supernet.fielddocs import described

AuthMode = Literal["required", "off"]

_bearer = HTTPBearer(
    auto_error=False,
    description="an API token: `segnas token create --user NAME` prints one",
)
UNAUTHORIZED = {401: {"model": Problem, "description": "no token, or an unknown or revoked one"}}


def _unauthorized(detail: str) -> HTTPException:
    return HTTPException(401, detail, headers={"WWW-Authenticate": "Bearer"})


async def _local_admin(request: Request) -> Principal:
    state = request.app.state
    if getattr(state, "local_admin", None) is None:
        state.local_admin = await blocking(request, AccountStore(state.store).local_admin)
    return state.local_admin


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """The user the request acts as.

    Raises:
        HTTPException: 401, no usable token where one is required.
    """
    if request.app.state.settings.auth == "off":
        return await _local_admin(request)
    if credentials is None:
        raise _unauthorized(
            "this server needs a token: send Authorization: Bearer TOKEN "
            "(segnas token create --user NAME makes one)"
        )
    accounts = AccountStore(request.app.state.store)
    user = await blocking(request, accounts.authenticate, credentials.credentials)
    if user is None:
        raise _unauthorized("the token is unknown or revoked")
    return user


async def user_or_page(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal | None:
    """``current_user``, except that a browser's navigation to a page without a token gets
    None: the page is the same for everyone and signs in to fetch its data."""
    if (
        wants_html(request)
        and credentials is None
        and request.app.state.settings.auth == "required"
    ):
        return None
    return await current_user(request, credentials)


CurrentUser = Annotated[Principal, Depends(current_user)]
UserOrPage = Annotated[Principal | None, Depends(user_or_page)]


def owned_search(store: SearchStore, user: Principal, search_id: str) -> SearchRecord:
    """The search, if ``user`` may see it (blocking).

    Raises:
        SearchNotFoundError: no such search, or another user's.
    """
    record = store.get(search_id)
    check_owner(user, record.owner_id, search_id)
    return record


def check_owner(user: Principal, owner_id: int, search_id: str) -> None:
    """Raises:
    SearchNotFoundError: the search is another user's."""
    if not user.owns(owner_id):
        raise SearchNotFoundError(f"no search with id {search_id!r}")


@described
class Me(BaseModel):
    """The signed-in user, and whether the server asks for tokens at all.

    Attributes:
        name: the account's name (with ``auth: off``, the local admin's: ``admin``).
        admin: whether the account is an admin (sees every search, and the evaluations).
    """

    name: str
    admin: bool
    auth: AuthMode = Field(description="off: the server runs without accounts (loopback only)")


router = APIRouter(tags=["accounts"], responses=UNAUTHORIZED)


@router.get("/me", response_model=Me)
async def me(request: Request, user: CurrentUser) -> Me:
    """Who the token belongs to (the page shows it, and asks for a token on 401)."""
    return Me(name=user.name, admin=user.is_admin, auth=request.app.state.settings.auth)
