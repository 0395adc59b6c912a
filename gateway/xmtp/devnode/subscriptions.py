"""Live fan-out of newly stored items to open Subscribe… streams, with bounded memory.

Each subscriber has a queue of at most ``capacity`` items. A subscriber that falls
behind is not allowed to grow the node: its queue is dropped and it is flagged
*overflowed*, and the stream then re-reads what it missed from the database after the
last id it sent per topic. Nothing is lost and memory stays bounded.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_CAPACITY = 1000


@dataclass(frozen=True, slots=True)
class Wakeup(Generic[T]):
    items: list[T]
    overflowed: bool


class Subscriber(Generic[T]):
    def __init__(self, capacity: int) -> None:
        self._capacity = capacity
        self._items: deque[T] = deque()
        self._overflowed = False
        self._ready = asyncio.Event()

    def offer(self, item: T) -> None:
        if self._overflowed:
            return
        if len(self._items) >= self._capacity:
            self._items.clear()
            self._overflowed = True
        else:
            self._items.append(item)
        self._ready.set()

    async def wait(self) -> Wakeup[T]:
        await self._ready.wait()
        self._ready.clear()
        wakeup = Wakeup(list(self._items), self._overflowed)
        self._items.clear()
        self._overflowed = False
        return wakeup


class Hub(Generic[T]):
    """Topic (group id or installation key) -> the subscribers listening to it."""

    def __init__(self, capacity: int = DEFAULT_CAPACITY) -> None:
        self._capacity = capacity
        self._subscribers: dict[bytes, set[Subscriber[T]]] = {}

    def publish(self, topic: bytes, item: T) -> None:
        for subscriber in self._subscribers.get(topic, ()):
            subscriber.offer(item)

    @contextmanager
    def subscribe(self, topics: Iterable[bytes]) -> Iterator[Subscriber[T]]:
        subscriber: Subscriber[T] = Subscriber(self._capacity)
        topic_list = list(topics)
        for topic in topic_list:
            self._subscribers.setdefault(topic, set()).add(subscriber)
        try:
            yield subscriber
        finally:
            for topic in topic_list:
                listeners = self._subscribers.get(topic)
                if listeners is not None:
                    listeners.discard(subscriber)
                    if not listeners:
                        del self._subscribers[topic]

    def subscriber_count(self) -> int:
        return len({s for subs in self._subscribers.values() for s in subs})
