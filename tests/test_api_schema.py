"""Property-based tests of the HTTP API from its own OpenAPI schema (Schemathesis): requests
generated from the schema, valid and invalid, sent to a real server on loopback; no answer
may be a 5xx, and every answer must have a documented status, content type and body."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.config import SchemathesisConfig
from serving_helpers import LiveServer

from nextclick.serving.app import ServeSettings, create_app

# An invalid request may also be refused as too large (413: the body limit comes first).
REFUSALS = [400, 401, 403, 404, 405, 406, 409, 413, 415, 422, 428, 429]
CONFIG = SchemathesisConfig.from_dict(
    {"checks": {"negative_data_rejection": {"expected-statuses": REFUSALS}}}
)


@pytest.fixture(scope="module")
def api(model_dirs):
    app = create_app(ServeSettings(model_dir=str(model_dirs["gru4rec"])))
    with LiveServer(app) as server:
        yield schemathesis.openapi.from_url(f"{server.url}/openapi.json", config=CONFIG)


def operations(schema) -> list:
    return [result.ok() for result in schema.get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
def test_every_answer_is_documented_and_none_is_a_server_error(api, mode):
    tested = []
    for operation in operations(api):

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=25, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))  # fmt: skip
        def check(case):
            case.call_and_validate()

        try:
            check()
        except Unsatisfiable:  # nothing to get wrong in a request without parameters
            assert mode is GenerationMode.NEGATIVE
            continue
        tested.append(operation.label)
    assert "POST /v1/sessions/{session_id}/events" in tested and "POST /v1/recommend" in tested
    assert len(tested) >= (10 if mode is GenerationMode.POSITIVE else 6)
