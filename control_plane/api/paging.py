"""How a paged list route names its next page: an RFC 8288 `Link: <url>; rel="next"` header (as GitHub's API does),
absent on the last page, while the body stays the JSON array it always was (decision 0013).

The next URL is the request's own with `cursor` set, so the client's `limit` and `selector` carry over. Clients
follow it on the server they asked (they take its query, never its host: a token is never sent elsewhere).
"""

from __future__ import annotations

from fastapi import Request, Response


def link_next(request: Request, response: Response, next_cursor: str | None) -> None:
    """Set the `Link` header naming the next page, when there is one."""
    if next_cursor is not None:
        url = request.url.include_query_params(cursor=next_cursor)
        response.headers["Link"] = f'<{url}>; rel="next"'
