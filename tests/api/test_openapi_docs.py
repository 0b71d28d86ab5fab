"""The OpenAPI schema documents auth and every refusal; /docs is served from the farm's own files (issue 16, bug 3)."""

from __future__ import annotations

from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from api.app import create_app
from core.settings import FarmSettings


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    data = tmp_path_factory.mktemp("docs")
    return TestClient(create_app(FarmSettings(data_dir=data, database_url=f"sqlite:///{data / 'z.db'}")))


def _responses(schema: dict, method: str, path: str) -> dict:
    return schema["paths"][path][method]["responses"]


def test_schema_declares_how_to_send_a_key_and_which_routes_need_an_admin_one(api: TestClient) -> None:
    schema = api.get("/openapi.json").json()
    schemes = schema["components"]["securitySchemes"]
    assert schemes["apiKey"] == {"type": "http", "scheme": "bearer", "description": schemes["apiKey"]["description"]}
    assert schemes["apiKeyHeader"]["in"] == "header" and schemes["apiKeyHeader"]["name"] == "X-API-Key"
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if operation.get("security"):
                assert "401" in operation["responses"], f"{method.upper()} {path} does not document 401"
    assert schema["paths"]["/v1/jobs"]["post"]["security"] == [{"apiKey": []}, {"apiKeyHeader": []}]
    assert _responses(schema, "get", "/v1/workers")["403"]["description"] == "the route needs an admin API key"
    assert schema["paths"]["/v1/workers"]["get"]["security"] == [{"apiKey": ["admin"]}, {"apiKeyHeader": ["admin"]}]
    assert "security" not in schema["paths"]["/healthz"]["get"]


def test_schema_documents_the_refusals_with_their_bodies(api: TestClient) -> None:
    schema = api.get("/openapi.json").json()
    submit = _responses(schema, "post", "/v1/jobs")
    assert {"401", "409", "413", "422", "429"} <= set(submit)
    refusal = submit["422"]["content"]["application/json"]["schema"]["$ref"]
    assert refusal == "#/components/schemas/Refusal"
    problem = schema["components"]["schemas"]["FieldProblem"]["properties"]
    assert {"field", "value", "rule", "message"} <= set(problem)
    assert "Idempotency-Key" in submit["409"]["description"] and "Retry-After" in submit["429"]["description"]
    assert {"401", "404", "422"} <= set(_responses(schema, "get", "/v1/jobs/{job_id}"))
    assert {"409", "413", "429"} <= set(_responses(schema, "post", "/v1/batches"))
    assert "409" in _responses(schema, "delete", "/v1/jobs/{job_id}")


def test_docs_page_loads_swagger_ui_from_the_farm_not_a_cdn(api: TestClient) -> None:
    page = api.get("/docs")
    assert page.status_code == 200
    assert "cdn." not in page.text and "https://" not in page.text
    assert "/static-offline-docs/swagger-ui-bundle.js" in page.text
    script = api.get("/static-offline-docs/swagger-ui-bundle.js")
    assert script.status_code == 200 and len(script.content) > 500_000
    assert api.get("/static-offline-docs/swagger-ui.css").status_code == 200
    assert "cdn." not in api.get("/redoc").text


def test_docs_assets_ship_with_the_package() -> None:
    import fastapi_offline

    assert (Path(fastapi_offline.__file__).parent / "static" / "swagger-ui-bundle.js").is_file()
