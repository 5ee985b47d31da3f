"""Fuzzing the REST API over real HTTP: schemathesis generates requests for every operation of the control plane's
own `/openapi.json` (valid and invalid parameters and bodies) and sends them to a real server with its own data
directory and its own Mosquitto, both started here.

- As admin, no request makes the server fail (no 5xx) and every answer the document describes matches its schema.
- As viewer, every operation that is not a GET answers 403 whatever the request holds: authorisation comes before
  the body is parsed or validated, never a 2xx, a 4xx about the body, or a 5xx.

Nothing is excluded. The two event streams (`/events`) end once their subject is final and answer 404 for an
unknown id; every request is bounded by a timeout all the same, so a stream that stayed open fails the test
instead of hanging it. The server's playbooks directory holds only the declarations of the real one
(`api_vars.yml`) and no playbook: a fuzzed enrollment can name any host or `connection: local`, and a fuzzed run
must never reach one, so every run the fuzzer manages to start fails at "playbook ... is not in ..." instead.

Bounded for CI (docs/security.md, "Fuzzing"): a few examples per operation, derandomized; EDGE_FUZZ_EXAMPLES
raises the count for a longer local run.
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from schemathesis.checks import content_type_conformance, not_a_server_error, response_schema_conformance

from control_plane.api.app import create_app
from control_plane.settings import AnsibleSettings, ServerSettings
from tests.fuzzing import fuzz_settings
from tests.integration.control_plane.conftest import RunningServer, server_settings, start_server
from tests.support import ADMIN_HEADERS, Mosquitto, mint_token

pytestmark = [pytest.mark.integration, pytest.mark.fuzz]

REPOSITORY_PLAYBOOKS = Path(__file__).resolve().parents[3] / "playbooks"
REQUEST_TIMEOUT_S = 30
ADMIN_CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]

# The document is needed when pytest collects (one test per operation), before any server runs; the fixture checks
# that the real server serves exactly this document. (schemathesis.pytest.from_fixture, which would load it from
# the running server, does not work with pytest 9.2: it writes `Node._nodeid`, which pytest no longer has.)
OPENAPI = create_app(ServerSettings()).openapi()
API = schemathesis.openapi.from_dict(OPENAPI)
API.config.update(request_timeout=REQUEST_TIMEOUT_S)
# The credential is the test's to choose (admin or viewer): never a generated Authorization header.
API.config.generation.update(with_security_parameters=False)


@pytest.fixture(scope="module")
def fuzzed_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    broker = Mosquitto(workdir=tmp_path_factory.mktemp("fuzz-mosquitto"))
    broker.start()
    playbooks = tmp_path_factory.mktemp("fuzz-playbooks")
    shutil.copy(REPOSITORY_PLAYBOOKS / "api_vars.yml", playbooks / "api_vars.yml")
    settings: ServerSettings = server_settings(broker, tmp_path_factory.mktemp("fuzz-cp-data"))
    settings = settings.model_copy(update={"ansible": AnsibleSettings(playbooks_dir=playbooks)})
    running = start_server(settings)
    try:
        assert running.http.get("/openapi.json").json() == OPENAPI, "the server serves another API description"
        yield running
    finally:
        running.stop()
        broker.stop()


@pytest.fixture(scope="module")
def viewer_headers(fuzzed_server: RunningServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {mint_token(fuzzed_server.http, 'viewer', 'fuzz-viewer')}"}


@API.parametrize()
@fuzz_settings(ci_examples=25, deadline=None)  # each request is bounded by REQUEST_TIMEOUT_S instead
def test_as_admin_no_request_fails_the_server_or_breaks_the_schema(
    case: schemathesis.Case, fuzzed_server: RunningServer
) -> None:
    case.call_and_validate(base_url=fuzzed_server.url, headers=ADMIN_HEADERS, checks=ADMIN_CHECKS)


@API.exclude(method="GET").parametrize()
@fuzz_settings(ci_examples=15, deadline=None)
def test_as_viewer_every_change_is_forbidden_whatever_the_request(
    case: schemathesis.Case, fuzzed_server: RunningServer, viewer_headers: dict[str, str]
) -> None:
    response = case.call(base_url=fuzzed_server.url, headers=viewer_headers)
    said = f"{case.method} {case.formatted_path}: {response.status_code} {response.text}"
    if case.method.upper() != case.operation.method.upper():
        # schemathesis also probes methods the path does not have (TRACE, ...): no such operation, nothing done.
        assert response.status_code == 405, said
    else:
        assert response.status_code == 403, said


def integer_parameters() -> list[tuple[str, str, str, str]]:
    found = []
    for path, operations in OPENAPI["paths"].items():
        for method, operation in operations.items():
            for parameter in operation.get("parameters", []):
                schema = parameter["schema"]
                if "integer" in {schema.get("type"), *(s.get("type") for s in schema.get("anyOf", []))}:
                    found.append((method, path, parameter["in"], parameter["name"]))
    return found


@pytest.mark.parametrize(
    ("method", "path", "where", "name"), [pytest.param(*p, id=f"{p[0]} {p[1]} {p[3]}") for p in integer_parameters()]
)
def test_an_integer_parameter_past_64_bits_is_refused_not_a_server_error(
    fuzzed_server: RunningServer, method: str, path: str, where: str, name: str
) -> None:
    """The fuzzer's finding made a rule (`GET /v1/audit?after=2**65` was a 500: SQLite cannot bind it): every
    integer parameter of the document is bounded where it comes in, so 2**64 is a 422 naming it."""
    huge = str(2**64)
    url = re.sub(r"\{[^}]+\}", lambda m: huge if m.group(0) == f"{{{name}}}" else "x1", path)
    answer = fuzzed_server.http.request(method.upper(), url, params={name: huge} if where == "query" else None)
    assert answer.status_code == 422, answer.text
    assert any(error["loc"][-1] == name for error in answer.json()["detail"]), answer.text
