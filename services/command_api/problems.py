"""RFC 9457 problem details: every error the API returns is `application/problem+json`."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from fastapi import Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel

from services.core.statuses import OrderStatus

PROBLEM_JSON = "application/problem+json"


class Problem(BaseModel):
    type: str
    title: str
    status: int
    detail: str = ""
    instance: str | None = None
    command_id: UUID | None = None
    current_status: OrderStatus | None = None
    current_version: int | None = None


class ProblemError(Exception):
    def __init__(self, status: int, kind: str, title: str, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or title)
        self.status, self.kind, self.title, self.detail, self.extra = (
            status,
            kind,
            title,
            detail,
            extra,
        )


def problem_response(
    request: Request,
    status: int,
    kind: str,
    title: str,
    detail: str = "",
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> JSONResponse:
    body: dict[str, Any] = {
        "type": f"/problems/{kind}",
        "title": title,
        "status": status,
        "detail": detail,
        "instance": request.url.path,
    }
    body.update({k: (str(v) if isinstance(v, UUID) else v) for k, v in extra.items()})
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": Problem, "content": {PROBLEM_JSON: {}}}
    for code in (400, 401, 403, 404, 409, 422, 503, 504)
}
