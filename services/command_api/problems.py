"""RFC 9457 problem details: every error the API returns is `application/problem+json`, and every
problem body is built here, by `Problem.body`."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from pydantic import BaseModel

from services.core.statuses import OrderStatus

PROBLEM_JSON = "application/problem+json"


class ProblemModel(BaseModel):
    """The problem body as OpenAPI documents it."""

    type: str
    title: str
    status: int
    detail: str = ""
    instance: str | None = None
    command_id: UUID | None = None
    current_status: OrderStatus | None = None
    current_version: int | None = None


@dataclass(frozen=True, slots=True)
class Problem:
    """One problem answer: `kind` names its type (`/problems/<kind>`); `extra` adds members."""

    status: int
    kind: str
    title: str
    detail: str = ""
    extra: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)

    def body(self, instance: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": f"/problems/{self.kind}",
            "title": self.title,
            "status": self.status,
            "detail": self.detail,
            "instance": instance,
        }
        body.update({k: (str(v) if isinstance(v, UUID) else v) for k, v in self.extra.items()})
        return body

    def response_headers(self) -> dict[str, str]:
        headers = dict(self.headers)
        if self.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return headers


class ProblemError(Exception):
    """Raised where a request cannot go on; the API's handler answers with its problem."""

    def __init__(
        self,
        status: int,
        kind: str,
        title: str,
        detail: str = "",
        *,
        headers: Mapping[str, str] | None = None,
        **extra: Any,
    ) -> None:
        super().__init__(detail or title)
        self.problem = Problem(status, kind, title, detail, extra, headers or {})


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ProblemModel, "content": {PROBLEM_JSON: {}}}
    for code in (400, 401, 403, 404, 409, 422, 503, 504)
}
