"""Where the API's blocking calls (the database, Redis) run: one thread pool per process.

The handlers are ``async`` and hand each blocking call to this pool, which has as many
threads as the engine has connections, so a thread never waits for one and none is opened
under load. FastAPI would run sync handlers in AnyIO's thread pool instead; that hop costs
about four times the CPU of asyncio's executor (57 against 15 microseconds a call here), and a
poll is only about 550 microseconds of CPU in all (docs/benchmarks.md, "API load").
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

from fastapi import Request

P = ParamSpec("P")
T = TypeVar("T")


def make_pool(threads: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=threads, thread_name_prefix="segnas-api-io")


async def blocking(
    request: Request, call: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs
) -> T:
    """``call(*args, **kwargs)`` in the app's pool; its exception, if any, is raised here.

    A client that goes away cancels the wait, not the call: a write in flight still ends.
    """
    pool: ThreadPoolExecutor = request.app.state.io_pool
    return await asyncio.get_running_loop().run_in_executor(
        pool, functools.partial(call, *args, **kwargs)
    )
