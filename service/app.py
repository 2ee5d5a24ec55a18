"""The FastAPI application: ``create_app`` wires settings, the database and the job queue.

The API process imports neither torch nor Ray; specs are validated by ``searchspec.spec``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib import metadata
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import SQLAlchemyError
from starlette.datastructures import State
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match
from swagger_ui_bundle import swagger_ui_path

from errors import ConfigError
from jobqueue import DispatcherHeartbeats, JobQueue, QueueUnavailableError, redis_client
from service.answers import AnswerCache
from service.auth import router as auth_router
from service.blocking import make_pool
from service.evaluations import router as evaluations_router
from service.guards import RequestGuard
from service.limits import BodyGuard
from service.pages import WEB_DIR
from service.schemas import BODY_GUARD, DispatchersHealth, Health
from service.searches import router as searches_router
from service.settings import Settings
from service.specs import router as specs_router
from storage.engine import make_engine
from storage.leases import SearchLeases
from storage.searches import IdempotencyConflictError, SearchNotFoundError, SearchStore

log = logging.getLogger(__name__)


def _version() -> str:
    """The installed distribution's version (the API does not import the command line)."""
    try:
        return metadata.version("segnas")
    except metadata.PackageNotFoundError:
        return "unknown"


FASTAPI_BODY_ERROR = "There was an error parsing the body"
"""FastAPI's 400 detail for a body it could not decode (not UTF-8, for one)."""


def create_app(
    settings: Settings | None = None,
    *,
    store: SearchStore | None = None,
    queue: JobQueue | None = None,
) -> FastAPI:
    """The API. ``store`` and ``queue`` default to the ones ``settings`` name; the caller
    that passes its own keeps ownership of it."""
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        own_store, own_queue = store is None, queue is None
        # The handlers' blocking calls: as many threads as the engine has connections.
        app.state.io_pool = make_pool(settings.db_pool_size)
        app.state.store = store or SearchStore(engine=_api_engine(settings))
        if queue is None and settings.redis_url is None:
            raise ConfigError("REDIS_URL is not set (segnas serve starts an embedded Redis)")
        app.state.queue = queue or JobQueue(
            redis_client(settings.redis_url or "", socket_timeout=5), prefix=settings.queue_prefix
        )
        app.state.leases = SearchLeases(app.state.store)
        # /healthz has a lane of its own (a thread and a connection): a load of slow reads
        # that holds every thread and connection of the pool must not make it look down.
        app.state.health_pool = make_pool(1)
        app.state.health_engine = (
            create_engine(app.state.store.engine.url, pool_size=1, max_overflow=0)
            if app.state.store.engine.dialect.name == "postgresql"
            else app.state.store.engine
        )
        app.state.settings = settings
        app.state.curve_answers = AnswerCache()  # GET /rewards: an unchanged answer's bytes
        app.state.front_answers = AnswerCache()  # GET /front: the same, for the size front
        app.state.local_admin = None  # the account of `auth: off`, read on first use
        # What start-up built (FastAPI, pydantic, SQLAlchemy) lives as long as the process:
        # out of the collector's way, full collections under load pause for a few ms, not 70.
        gc.collect()
        gc.freeze()
        try:
            yield
        finally:
            if own_queue:
                app.state.queue.client.close()
            app.state.io_pool.shutdown()
            app.state.health_pool.shutdown()
            if app.state.health_engine is not app.state.store.engine:
                app.state.health_engine.dispose()
            if own_store:
                app.state.store.close()

    app = FastAPI(
        title="segnas",
        version=_version(),
        description="ENAS neural architecture search for semantic segmentation, as a service.",
        lifespan=lifespan,
        # FastAPI's own /docs and /redoc load their scripts from a CDN: /docs is served below,
        # offline, from the swagger-ui-bundle package; ReDoc has no offline copy here.
        docs_url=None,
        redoc_url=None,
        responses=BODY_GUARD,
        # Operation ids are the functions' names (submit_search, list_searches), which a
        # generated client turns into its methods' names.
        generate_unique_id_function=lambda route: route.name,
    )
    app.include_router(auth_router)
    app.include_router(searches_router)
    app.include_router(evaluations_router)
    app.include_router(specs_router)
    app.mount("/static", StaticFiles(directory=WEB_DIR), name="static")
    app.mount("/docs-assets", StaticFiles(directory=swagger_ui_path), name="docs-assets")
    app.add_middleware(BodyGuard, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestGuard, allowed_hosts=settings.allowed_hosts)  # the outermost
    _add_error_handlers(app)

    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(WEB_DIR / "index.html", media_type="text/html")

    @app.get("/compare", include_in_schema=False)
    async def compare() -> FileResponse:
        """Searches side by side (``?ids=A,B``): reward curves overlaid, results, spec diff."""
        return FileResponse(WEB_DIR / "compare.html", media_type="text/html")

    @app.get("/docs", include_in_schema=False)
    async def docs() -> FileResponse:
        """Swagger UI over /openapi.json, every file from this server."""
        return FileResponse(WEB_DIR / "docs.html", media_type="text/html")

    @app.get("/healthz", response_model=Health, responses={503: {"model": Health}})
    async def healthz(request: Request) -> JSONResponse:
        """Whether the database and Redis answer and, when the service expects dispatchers,
        whether one of them has a live heartbeat."""
        state = request.app.state
        health = await asyncio.get_running_loop().run_in_executor(state.health_pool, _health, state)
        body = health.model_dump(exclude={"dispatchers"} if health.dispatchers is None else None)
        return JSONResponse(body, status_code=200 if health.status == "ok" else 503)

    return app


def _health(state: State) -> Health:
    database, redis = _check(state)
    dispatchers = None
    if state.settings.expect_dispatchers and redis == "ok":
        try:
            seen = DispatcherHeartbeats(state.queue).seen()
            dispatchers = DispatchersHealth(
                alive=seen.alive, last_heartbeat_seconds=seen.newest_seconds
            )
        except QueueUnavailableError as e:
            log.warning("healthz: %s", e)
            redis = "Redis does not answer"
    status = "ok"
    if database != "ok" or redis != "ok":
        status = "unavailable"
    elif dispatchers is not None and dispatchers.alive == 0:
        status = "degraded"
    return Health(status=status, database=database, redis=redis, dispatchers=dispatchers)


def _check(state: State) -> tuple[str, str]:
    """``"ok"`` or a short word for the database and for Redis; the reason (which may name
    hosts and paths) goes to the log, not to the client."""
    database = redis = "ok"
    try:
        with state.health_engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except SQLAlchemyError as e:
        log.warning("healthz: database: %s", _first_line(e))
        database = "unavailable"
    try:
        state.queue.ping()
    except QueueUnavailableError as e:
        log.warning("healthz: %s", e)
        redis = "Redis does not answer"
    return database, redis


def _api_engine(settings: Settings) -> Engine:
    """A fixed pool of ``db_pool_size`` connections, without the pre-ping round trip (the
    store's reads retry once on a connection the server dropped)."""
    return make_engine(
        settings.database_url,
        pre_ping=False,
        pool_size=settings.db_pool_size,
        max_overflow=0,
    )


def _add_error_handlers(app: FastAPI) -> None:
    """Every error a client can cause is a 4xx with a ``detail`` line; an unreachable
    database is a 503, never a 500 with a traceback."""

    def problem(status: int, detail: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"detail": detail, **extra}, status_code=status)

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> JSONResponse:
        for e in exc.errors():
            if e.get("type") == "json_invalid":
                reason = (e.get("ctx") or {}).get("error", "")
                return problem(422, f"the body is not valid JSON ({reason})".replace(" ()", ""))
        errors = [
            {"loc": [str(p) for p in e.get("loc", ())], "msg": e.get("msg", "")}
            for e in exc.errors()
        ]
        lines = [f"{'.'.join(e['loc'][1:] or e['loc'])}: {e['msg']}" for e in errors[:5]]
        more = f" (and {len(errors) - 5} more)" if len(errors) > 5 else ""
        return problem(422, "; ".join(lines) + more, errors=errors)

    # Starlette's class: FastAPI raises it too (a body it cannot decode), and routing (404, 405).
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        detail = str(exc.detail)
        headers = exc.headers
        if exc.status_code == 400 and detail == FASTAPI_BODY_ERROR:  # bytes json.loads refused
            detail = "the body is not JSON in UTF-8; send it as UTF-8 JSON"
        if exc.status_code == 405:
            # Starlette names the methods of the first route of the path only.
            headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(app, request))}
        return JSONResponse({"detail": detail}, status_code=exc.status_code, headers=headers)

    @app.exception_handler(SearchNotFoundError)
    async def not_found(_request: Request, exc: SearchNotFoundError) -> JSONResponse:
        return problem(404, str(exc))

    @app.exception_handler(IdempotencyConflictError)
    async def conflict(_request: Request, exc: IdempotencyConflictError) -> JSONResponse:
        return problem(409, str(exc))

    @app.exception_handler(SQLAlchemyError)
    async def database_down(_request: Request, exc: SQLAlchemyError) -> JSONResponse:
        log.error("database error: %s", _first_line(exc))
        return problem(503, "the database is unavailable; try again shortly")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not the client's doing: logged with its traceback, answered in one line
        # that names nothing of the server.
        log.error("unexpected error in %s %s", request.method, request.url.path, exc_info=exc)
        return problem(500, "internal error; the server's log has the details")


def _allowed_methods(app: FastAPI, request: Request) -> list[str]:
    """Every method some route of the request's path answers."""
    methods: set[str] = set()
    for route in _leaf_routes(app.router.routes):
        match, _ = route.matches(request.scope)
        if match is not Match.NONE:
            methods |= set(getattr(route, "methods", None) or ())
    if "GET" in methods:
        methods.add("HEAD")
    return sorted(methods)


def _leaf_routes(routes: list[Any]) -> list[Any]:
    """The routes with methods, inside included routers too (FastAPI wraps those)."""
    leaves = []
    for route in routes:
        inner = getattr(getattr(route, "original_router", None), "routes", None)
        leaves += _leaf_routes(inner) if inner is not None else [route]
    return leaves


def _first_line(error: BaseException) -> str:
    text_ = str(getattr(error, "orig", None) or error).strip()
    return text_.splitlines()[0] if text_ else type(error).__name__
