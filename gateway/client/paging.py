"""Pages and the async paginator over the API's cursor pages (``has_next``/``has_prev``
and their tokens), in the manner of Twilio's paginators."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")

Fetch = Callable[[Mapping[str, str]], Awaitable[Any]]


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    has_next: bool
    has_prev: bool
    next_page_token: str | None
    prev_page_token: str | None
    _fetch: Fetch = field(repr=False)
    _convert: Callable[[Any], T] = field(repr=False)
    _keep: Mapping[str, str] = field(repr=False)  # the page size, under its own name

    async def next_page(self) -> Page[T] | None:
        return await self._follow(self.next_page_token)

    async def prev_page(self) -> Page[T] | None:
        return await self._follow(self.prev_page_token)

    async def _follow(self, token: str | None) -> Page[T] | None:
        if token is None:
            return None
        # the token carries the listing's filters; only the page size travels beside it
        return await load_page(self._fetch, {**self._keep, "page_token": token},
                               self._convert, self._keep)


async def load_page(fetch: Fetch, params: Mapping[str, str], convert: Callable[[Any], T],
                    keep: Mapping[str, str]) -> Page[T]:
    body = await fetch(params)
    return Page([convert(item) for item in body["data"]], body["has_next"], body["has_prev"],
                body["next_page_token"], body["prev_page_token"], fetch, convert, keep)


class Paginator(Generic[T]):
    """``async for item in paginator`` walks every page (at most ``limit`` items);
    ``await paginator.first_page()`` gives one page to step through by hand."""

    def __init__(self, fetch: Fetch, params: Mapping[str, str], convert: Callable[[Any], T],
                 *, size_name: str, limit: int | None = None) -> None:
        self._fetch = fetch
        self._params = dict(params)
        self._convert = convert
        self._keep = {size_name: self._params[size_name]} if size_name in self._params else {}
        self._limit = limit

    async def first_page(self) -> Page[T]:
        return await load_page(self._fetch, self._params, self._convert, self._keep)

    async def __aiter__(self) -> AsyncIterator[T]:
        seen = 0
        page: Page[T] | None = await self.first_page()
        while page is not None:
            for item in page.items:
                if self._limit is not None and seen >= self._limit:
                    return
                seen += 1
                yield item
            page = await page.next_page()

    async def all(self) -> list[T]:
        return [item async for item in self]
