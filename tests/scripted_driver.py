"""A scripted search driver for the lease tests: the real driver's writes, without training.

``ScriptedSearch`` writes what a tiny search writes, in the driver's order and through the
same fenced ``SearchStore`` calls (rewind to the last checkpoint; per epoch, a batch of samples
and a progress update per controller step, the epoch, the checkpoint; then the derive
samples, the result, ``succeeded``), with values that depend on the slot alone: any run,
resumed or not, that ends with exactly these rows wrote what an undisturbed search writes.

As a process (``python tests/scripted_driver.py DB_URL SEARCH_ID WORKER ATTEMPT``, started by
``ScriptedLauncher``) it runs one epoch per line the test writes to its stdin and answers a
line on stdout per epoch; at the end of its stdin it runs to the end. SIGTERM stops it at the
next epoch boundary, as it stops the real driver at a step boundary; a lost lease stops it at
once. Exit status as ``workers.job``'s: 0 ended, 3 interrupted or lease lost.
"""

from __future__ import annotations

import signal
import subprocess
import sys
from dataclasses import dataclass, field
from typing import IO

from storage.fencing import Fence, LeaseLostError
from storage.searches import (
    CheckpointRecord,
    EpochRecord,
    ResultRecord,
    SampleRecord,
    SearchStore,
)
from workers.launchers import LocalProcess

EPOCHS, STEPS, BATCH, DERIVE = 3, 3, 4, 7
EXIT_ENDED, EXIT_INTERRUPTED = 0, 3


def _sample(phase: str, epoch: int, step: int, index: int) -> SampleRecord:
    value = ((epoch * 31 + step * 7 + index * 3) % 17) / 17
    return SampleRecord(
        phase=phase,
        epoch=epoch,
        step=step,
        index=index,
        arch=[epoch % 6, step % 6, index % 6],
        reward=value,
        accuracy=value,
        mean_precision=value,
        mean_recall=value,
        miou=value,
        miou_plus=value,
        policy_version=epoch * STEPS + step,
    )


class ScriptedSearch:
    """The writes of one driver of ``search_id`` under ``fence`` (None: unfenced)."""

    def __init__(self, store: SearchStore, search_id: str, fence: Fence | None) -> None:
        self.store, self.search_id, self.fence = store, search_id, fence

    def start(self) -> int:
        """Mark it running and rewind to the last checkpoint; returns the epoch to run next."""
        self.store.mark_running(self.search_id, fence=self.fence)
        last = self.store.last_checkpoint(self.search_id)
        self.store.rewind(self.search_id, -1 if last is None else last.epoch, fence=self.fence)
        return 0 if last is None else last.epoch + 1

    def epoch(self, epoch: int) -> None:
        fence, search_id = self.fence, self.search_id
        for step in range(STEPS):
            batch = [_sample("controller", epoch, step, i) for i in range(BATCH)]
            self.store.add_samples(search_id, batch, fence=fence)
            progress = {"epoch": epoch, "phase": "controller", "step": step + 1, "steps": STEPS}
            self.store.update_progress(search_id, progress, fence=fence)
        record = EpochRecord(
            epoch=epoch,
            train_loss=1.0 / (epoch + 1),
            shared_steps=8,
            lr=0.05,
            controller_entropy=1.0,
            mean_reward=0.5,
            baseline=0.4,
            seconds=1.0,
        )
        self.store.add_epoch(search_id, record, fence=fence)
        attempt = 0 if fence is None else fence.attempt
        path = f"scripted/{search_id}/epoch-{epoch}-attempt{attempt}.pt"
        self.store.add_checkpoint(
            search_id, CheckpointRecord(epoch=epoch, path=path, bytes=100), fence=fence
        )

    def finish(self) -> None:
        derive = [_sample("derive", EPOCHS, 0, i) for i in range(DERIVE)]
        self.store.add_samples(self.search_id, derive, fence=self.fence)
        best = max(derive, key=lambda s: s.reward)
        result = ResultRecord(
            arch=best.arch, reward=best.reward, metrics={"miou": best.miou}, params=1000
        )
        self.store.set_result(self.search_id, result, fence=self.fence)
        self.store.mark_finished(self.search_id, "succeeded", fence=self.fence)

    def run(self) -> None:
        """Start (or resume) and run to the end, ungated."""
        for epoch in range(self.start(), EPOCHS):
            self.epoch(epoch)
        self.finish()


def rows(store: SearchStore, search_id: str) -> dict[str, object]:
    """What a search's rows say, in a form two searches compare by."""
    result = store.result(search_id)
    return {
        "samples": [
            (s.phase, s.epoch, s.step, s.index, tuple(s.arch), s.reward, s.policy_version)
            for s in store.samples(search_id)
        ],
        "epochs": [e.model_dump() for e in store.epochs(search_id)],
        "checkpoints": [(c.epoch, c.bytes) for c in store.checkpoints(search_id)],
        "result": None if result is None else result.model_dump(),
        "status": store.get(search_id).status,
    }


def undisturbed_rows(store: SearchStore) -> dict[str, object]:
    """The rows of a scripted search that one unfenced driver ran from start to end."""
    search_id = store.create({"seed": 0}, name="undisturbed").id
    ScriptedSearch(store, search_id, None).run()
    return rows(store, search_id)


# The process and its launcher


@dataclass
class ScriptedDriver:
    """One launched scripted driver, driven by the test."""

    search_id: str
    fence: Fence
    process: subprocess.Popen[str]
    answers: list[str] = field(default_factory=list)

    def go(self) -> str:
        """Let it run one epoch; returns its answer (``epoch N``, ``stopped``, ``lease lost``)."""
        stdin = _pipe(self.process.stdin)
        stdin.write("go\n")
        stdin.flush()
        return self._answer()

    def run_to_end(self) -> int:
        """Close its stdin (it runs to the end) and wait for it; returns its exit status."""
        _pipe(self.process.stdin).close()
        while self._answer():
            pass
        return self.process.wait(timeout=120)

    def _answer(self) -> str:
        line = _pipe(self.process.stdout).readline().strip()
        if line:
            self.answers.append(line)
        return line


def _pipe(stream: IO[str] | None) -> IO[str]:
    if stream is None:
        raise AssertionError("the scripted driver has no pipe")
    return stream


class ScriptedLauncher:
    """Starts a scripted driver process per launch, as ``LocalLauncher`` starts the real one."""

    def __init__(self, db_url: str) -> None:
        self.db_url = db_url
        self.launched: list[ScriptedDriver] = []

    def launch(self, search_id: str, fence: Fence) -> LocalProcess:
        process = subprocess.Popen(
            [sys.executable, __file__, self.db_url, search_id, fence.worker, str(fence.attempt)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.launched.append(ScriptedDriver(search_id, fence, process))
        description = f"scripted driver of {search_id} (attempt {fence.attempt})"
        return LocalProcess(process, description)  # type: ignore[arg-type]

    def close(self) -> None:
        for driver in self.launched:
            if driver.process.poll() is None:
                driver.process.kill()
            driver.process.wait()
            for stream in (driver.process.stdin, driver.process.stdout):
                if stream is not None:
                    stream.close()


def main(argv: list[str]) -> int:
    db_url, search_id, worker, attempt = argv
    stop: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stop.append(signum))
    store = SearchStore(db_url)
    search = ScriptedSearch(store, search_id, Fence(worker, int(attempt)))

    def say(line: str) -> None:
        print(line, flush=True)

    try:
        epoch = search.start()
        gated = True
        while epoch < EPOCHS:
            if gated and not sys.stdin.readline():
                gated = False  # the test closed stdin: run to the end
            if stop:
                say("stopped")
                return EXIT_INTERRUPTED
            search.epoch(epoch)
            say(f"epoch {epoch}")
            epoch += 1
        search.finish()
        say("finished")
        return EXIT_ENDED
    except LeaseLostError:
        say("lease lost")
        return EXIT_INTERRUPTED
    finally:
        store.close()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
