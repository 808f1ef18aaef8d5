"""Pagination of list endpoints: `offset` and `limit` query parameters; the body stays a plain list, and the
headers say how many there are (`X-Total-Count`) and where the next and previous pages are (`Link`, RFC 8288)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Query, Request, Response
from sqlalchemy import func
from sqlmodel import Session, select

MAX_LIMIT = 200


@dataclass(frozen=True)
class Page:
    offset: int
    limit: int
    request: Request
    response: Response

    def rows(self, session: Session, query) -> list:
        """The page of `query`'s rows, with the headers set from the count of all of them."""
        total = session.exec(select(func.count()).select_from(query.order_by(None).subquery())).one()
        self.headers(total)
        return list(session.exec(query.offset(self.offset).limit(self.limit)))

    def of(self, items: list) -> list:
        """The page of an in-memory list (already filtered), with the headers set."""
        self.headers(len(items))
        return items[self.offset:self.offset + self.limit]

    def headers(self, total: int) -> None:
        self.response.headers["X-Total-Count"] = str(total)
        links = []
        if self.offset + self.limit < total:
            links.append(f'<{self.request.url.include_query_params(offset=self.offset + self.limit)}>; rel="next"')
        if self.offset > 0:
            prev = max(0, self.offset - self.limit)
            links.append(f'<{self.request.url.include_query_params(offset=prev)}>; rel="prev"')
        if links:
            self.response.headers["Link"] = ", ".join(links)


def page_params(request: Request, response: Response,
                offset: Annotated[int, Query(ge=0, le=10_000_000, description="Rows to skip.")] = 0,
                limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Rows per page.")] = 50) -> Page:
    return Page(offset=offset, limit=limit, request=request, response=response)


PageDep = Annotated[Page, Depends(page_params)]
