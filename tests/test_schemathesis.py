"""Property-based API testing with schemathesis against the app's own `/openapi.json`: generated
requests (valid and invalid) to every operation must never get a server error, and every answer
must match the schema the document declares (status codes, content types, bodies)."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.api_fixtures import make_twin
from twin.api.app import create_app
from twin.auth import KeyStore

MAX_EXAMPLES = 3  # per operation and mode: ~60 operations stay within about a minute here
ENDLESS = {"/alerts/stream"}  # server-sent events: an answer never ends (tests/test_sensors_api.py reads it)
CHECKS = (not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance)


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory):
    """The app over a small twin, with an admin key so that write operations run too."""
    store = make_twin(tmp_path_factory.mktemp("schemathesis") / "data")
    token = KeyStore(store.data_dir).create("schemathesis", "admin")[1]
    app = create_app(store)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    schema.config.headers = {"Authorization": f"Bearer {token}"}
    yield schema
    app.state.jobs.close()
    store.close()


def modes(operation) -> list:
    """Valid inputs always; invalid ones where there is a query or body to get wrong (a string
    path parameter has no invalid value, and hypothesis would search long to find none)."""
    from schemathesis.generation import GenerationMode

    definition = operation.definition.raw
    has_inputs = "requestBody" in definition or any(p.get("in") == "query" for p in definition.get("parameters", []))
    return [GenerationMode.POSITIVE, GenerationMode.NEGATIVE] if has_inputs else [GenerationMode.POSITIVE]


def test_api_conforms_to_its_openapi_document(api_schema):
    """Each operation in turn (valid and invalid inputs); the failures of all are reported together."""
    headers = dict(api_schema.config.headers)
    failures: list[str] = []
    operations = [result.ok() for result in api_schema.get_all_operations()]
    operations = [op for op in operations if op.path not in ENDLESS]
    assert len(operations) >= 40
    for operation in operations:
        for mode in modes(operation):

            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(
                max_examples=MAX_EXAMPLES,
                deadline=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
                database=None,
            )
            def check(case) -> None:
                case.call_and_validate(checks=list(CHECKS), headers=headers)

            try:
                check()
            except Unsatisfiable:
                continue  # no invalid input exists (an operation without parameters)
            except (Exception, BaseExceptionGroup) as exc:  # collect: one report for every operation that failed
                failures.append(f"{operation.label} ({mode.value}): {str(exc)[:1500]}")
    assert not failures, "\n\n".join(failures)
