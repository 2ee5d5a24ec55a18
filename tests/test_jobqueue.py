"""The job stream on a real Redis: the machine's server and the embedded one."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest
import redis
from redis.exceptions import AuthenticationError

from errors import SegnasError
from jobqueue import EmbeddedRedis, JobQueue, QueueUnavailableError, redis_client
from jobqueue.queue import REDIS_PASSWORD_FILE_ENV


def test_enqueue_adds_one_live_entry_per_search(job_queue: JobQueue) -> None:
    assert job_queue.enqueue("a")
    assert not job_queue.enqueue("a")  # already waiting: re-enqueueing orphans is safe
    assert job_queue.enqueue("b")
    assert job_queue.waiting() == ["a", "b"]
    jobs = job_queue.read("c1", 10, block_ms=10)
    assert [j.search_id for j in jobs] == ["a", "b"]
    assert job_queue.read("c2", 10, block_ms=10) == []  # delivered once to the group
    assert job_queue.pending() == 2


def test_ack_forgets_the_entry_and_the_search_can_be_queued_again(job_queue: JobQueue) -> None:
    job_queue.enqueue("a")
    (job,) = job_queue.read("c1", 1, block_ms=10)
    job_queue.ack(job)
    assert job_queue.pending() == 0 and job_queue.waiting() == []
    assert job_queue.enqueue("a")
    assert [j.search_id for j in job_queue.read("c1", 1, block_ms=10)] == ["a"]


def test_read_hands_out_at_most_count(job_queue: JobQueue) -> None:
    for name in "abc":
        job_queue.enqueue(name)
    assert len(job_queue.read("c1", 2, block_ms=10)) == 2
    assert job_queue.read("c1", 0) == []
    assert len(job_queue.read("c1", 5, block_ms=10)) == 1


def test_a_silent_consumers_entries_are_claimed_by_another(job_queue: JobQueue) -> None:
    job_queue.enqueue("a")
    (job,) = job_queue.read("dead", 1, block_ms=10)
    # Entries idle for less than min_idle stay with their consumer.
    assert job_queue.claim_stale("alive", min_idle_ms=3_600_000, count=5) == []
    claimed = job_queue.claim_stale("alive", min_idle_ms=0, count=5)
    assert claimed == [job]
    info = job_queue.client.xpending_range(job_queue.stream, JobQueue.GROUP, "-", "+", 10)
    assert [p["consumer"] for p in info] == ["alive"]


def test_touch_keeps_an_entry_with_its_consumer(job_queue: JobQueue) -> None:
    job_queue.enqueue("a")
    jobs = job_queue.read("c1", 1, block_ms=10)
    job_queue.touch("c1", jobs)
    info = job_queue.client.xpending_range(job_queue.stream, JobQueue.GROUP, "-", "+", 10)
    assert info[0]["consumer"] == "c1" and info[0]["times_delivered"] >= 1


def test_a_lost_group_is_created_again(job_queue: JobQueue) -> None:
    """A Redis that restarted empty has no stream and no group: the next call makes them."""
    job_queue.client.delete(job_queue.stream, job_queue.members)
    assert job_queue.enqueue("a")
    assert [j.search_id for j in job_queue.read("c1", 1, block_ms=10)] == ["a"]


def test_an_unreachable_redis_is_one_clear_error() -> None:
    queue = JobQueue(redis_client("redis://127.0.0.1:1/0", socket_connect_timeout=0.5))
    with pytest.raises(QueueUnavailableError, match="Redis does not answer"):
        queue.enqueue("a")
    with pytest.raises(QueueUnavailableError):
        queue.ping()


def test_a_bad_url_is_one_clear_error() -> None:
    with pytest.raises(Exception, match="not a Redis URL"):
        redis_client("http://nope")
    with pytest.raises(SegnasError) as caught:
        redis_client("http://user:hunter2@nope:1/0")
    assert "hunter2" not in str(caught.value) and "user:***@nope" in str(caught.value)


def test_the_password_comes_from_a_file_when_the_url_has_none(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As docker-compose gives it: REDIS_URL without a password, REDIS_PASSWORD_FILE a secret."""
    with EmbeddedRedis(tmp_path / "redis") as server:  # asks for a password
        bare = f"redis://127.0.0.1:{server.port}/0"
        with pytest.raises(AuthenticationError):
            redis_client(bare).ping()
        secret = tmp_path / "redis-password"
        secret.write_text(server.password + "\n")
        monkeypatch.setenv(REDIS_PASSWORD_FILE_ENV, str(secret))
        assert redis_client(bare).ping() is True
        assert redis_client(server.url).ping() is True  # a URL's own password wins
        monkeypatch.setenv(REDIS_PASSWORD_FILE_ENV, str(tmp_path / "nope"))
        with pytest.raises(SegnasError, match="cannot read the Redis password from"):
            redis_client(bare)


def test_the_embedded_server_keeps_entries_across_a_restart(tmp_path: Path) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    port = server.port
    try:
        queue = JobQueue(redis_client(server.url))
        queue.ensure_group()
        queue.enqueue("a")
        queue.enqueue("b")
        (delivered,) = queue.read("c1", 1, block_ms=10)
        queue.client.close()
    finally:
        server.stop()
    with EmbeddedRedis(tmp_path / "redis", port=port) as again:
        queue = JobQueue(redis_client(again.url))
        assert queue.waiting() == ["a", "b"]
        assert queue.pending() == 1  # still delivered to c1, claimable if c1 is gone
        assert queue.claim_stale("c2", min_idle_ms=0, count=5) == [delivered]
        assert [j.search_id for j in queue.read("c2", 5, block_ms=10)] == ["b"]
        queue.client.close()


def test_the_embedded_server_wants_its_password_and_refuses_admin_commands(
    tmp_path: Path,
) -> None:
    with EmbeddedRedis(tmp_path / "redis") as server:
        assert server.password and server.password in server.url
        anonymous = redis.Redis(host="127.0.0.1", port=server.port, socket_connect_timeout=2)
        with pytest.raises(redis.exceptions.AuthenticationError):
            anonymous.ping()
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        for command in (("CONFIG", "SET", "dir", "/tmp"), ("SAVE",), ("DEBUG", "SLEEP", "0")):
            with pytest.raises(redis.exceptions.ResponseError, match="unknown command"):
                client.execute_command(*command)
        client.close()
        anonymous.close()
        folder = tmp_path / "redis"
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700
        for name in ("password", "redis.conf"):
            assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600
        seen = subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True).stdout
        assert server.password not in seen  # not on any command line
