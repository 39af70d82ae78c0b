"""schemathesis against the API served by uvicorn on loopback (each store backend): every
operation of the OpenAPI document, with valid and with invalid data. No answer is a 5xx, and
every answer matches the document: its status is documented, its content type is the one
documented for it, its body validates against the documented schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from store_backends import BACKENDS, postgres_url

from .server import running_api

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
#: Examples per operation and mode: 15 operations x 2 modes x this, per backend (< 60 s).
EXAMPLES = 12


@pytest.mark.parametrize("kind", BACKENDS)
def test_api_conforms_to_its_document(kind: str, tmp_path: Path) -> None:
    if kind == "postgresql":
        postgres_url()  # skips with a reason when PostgreSQL is not configured
    with running_api(kind, tmp_path, rate=10_000, burst=10_000) as served:
        document = requests.get(served.base_url + "/openapi.json", timeout=10).json()
        schema = schemathesis.openapi.from_dict(document)
        session = requests.Session()
        headers = {"Authorization": f"Bearer {served.keys['manager']}"}
        # Real serials and voucher codes now and then, so the success answers are checked too.
        known = {"serial": st.sampled_from(served.serials)}
        operations = [result.ok() for result in schema.get_all_operations()]
        assert len(operations) == len({(o.method, o.path) for o in operations}) >= 15
        for operation in operations:
            for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
                strategies = [operation.as_strategy(generation_mode=mode, headers=headers)]
                if "{serial}" in operation.path and mode is GenerationMode.POSITIVE:
                    strategies.append(
                        known["serial"].flatmap(
                            lambda s, op=operation: op.as_strategy(
                                headers=headers, path_parameters={"serial": s}
                            )
                        )
                    )

                @settings(
                    max_examples=EXAMPLES,
                    deadline=None,
                    database=None,
                    suppress_health_check=list(HealthCheck),
                )
                @given(case=st.one_of(strategies))
                def check(case: schemathesis.Case) -> None:
                    response = case.call(base_url=served.base_url, session=session)
                    case.validate_response(response, checks=CHECKS)

                check()
