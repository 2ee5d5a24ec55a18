"""Answers kept in memory: the bytes of an answer that has not changed since it was made."""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Hashable


class AnswerCache:
    """The latest answers, by a key that changes whenever the answer would (``GET /rewards``:
    the search, the size asked for, and its step and sample counts): an unchanged answer
    (every finished search's curve, a running one's between two steps) is built once, however
    many clients ask. Thread-safe; ``size`` answers at most, the least recently used dropped."""

    def __init__(self, size: int = 32) -> None:
        self.size = size
        self._answers: OrderedDict[Hashable, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> bytes | None:
        with self._lock:
            answer = self._answers.get(key)
            if answer is not None:
                self._answers.move_to_end(key)
            return answer

    def put(self, key: Hashable, answer: bytes) -> None:
        with self._lock:
            self._answers[key] = answer
            self._answers.move_to_end(key)
            while len(self._answers) > self.size:
                self._answers.popitem(last=False)
