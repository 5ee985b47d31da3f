"""The agent's side of `POST /v1/enroll` over HTTP(S): one request, its answer, errors sorted for retry.

Imports httpx (like the artifact downloader). Never logs the enrollment token or the identity it receives; an
https:// control plane is verified against the pinned CA when one is given.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import httpx
from pydantic import ValidationError

from edge_agent.core.errors import EnrollmentError
from edge_agent.protocol.enrollment import (
    ACCEPTS_TUNNEL,
    ENROLL_ACCEPTS_HEADER,
    ENROLL_PATH,
    EnrollAnswer,
    EnrollRequest,
)

# Answers that carry an EnrollAnswer: approved, pending, denied.
ANSWER_CODES = frozenset({200, 202, 403})


class EnrollmentClient:
    def __init__(self, base_url: str, ca_file: Path | None = None, timeout_s: float = 30.0) -> None:
        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(ca_file)) if ca_file else True
        self._url = base_url.rstrip("/") + ENROLL_PATH
        self._client = httpx.Client(timeout=httpx.Timeout(timeout_s), verify=verify)

    def close(self) -> None:
        self._client.close()

    def ask(self, request: EnrollRequest, credential: str) -> EnrollAnswer:
        """The control plane's answer; EnrollmentError (permanent for refusals) otherwise."""
        try:
            response = self._client.post(
                self._url,
                content=request.model_dump_json(),
                headers={
                    "Authorization": f"Bearer {credential}",
                    "Content-Type": "application/json",
                    ENROLL_ACCEPTS_HEADER: ACCEPTS_TUNNEL,  # this agent reads the tunnel gateway in its identity
                },
            )
        except httpx.HTTPError as exc:
            raise EnrollmentError(f"cannot reach the control plane at {self._url}: {type(exc).__name__}") from exc
        if response.status_code in ANSWER_CODES:
            try:
                return EnrollAnswer.model_validate_json(response.content)
            except ValidationError as exc:
                if response.status_code != 403:
                    message = "the control plane's answer is not an enrollment answer"
                    raise EnrollmentError(message, permanent=True) from exc
        detail = _detail(response)
        if response.status_code >= 500 or response.status_code == 429:
            raise EnrollmentError(f"the control plane answered {response.status_code}: {detail}")
        raise EnrollmentError(f"refused ({response.status_code}): {detail}", permanent=True)


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:300]
    detail = body.get("detail") if isinstance(body, dict) else None
    return str(detail)[:500] if detail is not None else response.text[:300]
