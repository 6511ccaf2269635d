"""Confluent-compatible Schema Registry REST API (the subset Avro clients use).

Routes, response shapes and error codes follow Confluent's API reference, so
``confluent_kafka.schema_registry.SchemaRegistryClient`` and ``AvroSerializer`` /
``AvroDeserializer`` work against it unchanged. Only the AVRO schema type is served.
Every handler runs on the event loop, one at a time, so the store needs no read locks.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, PlainTextResponse

from etar_stack.schema_registry.store import RegistryError, SchemaStore, Version

MEDIA_TYPE = "application/vnd.schemaregistry.v1+json"


class _Response(JSONResponse):
    media_type = MEDIA_TYPE


def _flag(value: str | None) -> bool:
    return str(value).lower() == "true"


async def _schema_body(request: Request) -> str:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError):
        raise RegistryError(50005, "Request body is not valid JSON") from None
    if not isinstance(body, dict) or not isinstance(body.get("schema"), str):
        raise RegistryError(42201, "Invalid schema: the body needs a \"schema\" string")
    schema_type = body.get("schemaType") or "AVRO"
    if schema_type != "AVRO":
        raise RegistryError(42201, f"Invalid schema: schemaType {schema_type} is not supported "
                            "here; only AVRO")
    if body.get("references"):
        raise RegistryError(42201, "Invalid schema: schema references are not supported")
    return str(body["schema"])


def create_app(store: SchemaStore) -> FastAPI:
    """The REST API over ``store``."""
    app = FastAPI(title="etar schema registry", default_response_class=_Response)

    @app.exception_handler(RegistryError)
    async def _registry_error(request: Request, exc: RegistryError) -> JSONResponse:
        return _Response({"error_code": exc.error_code, "message": exc.message},
                         status_code=exc.status)

    def described(item: Version) -> dict[str, Any]:
        return {"subject": item.subject, "version": item.version, "id": item.schema_id,
                "guid": store.guid(item.schema_id), "schema": store.schema(item.schema_id)}

    @app.get("/")
    async def root() -> dict[str, Any]:
        return {}

    @app.get("/schemas/types")
    async def schema_types() -> list[str]:
        return ["AVRO"]

    @app.get("/schemas/ids/{schema_id}")
    async def schema_by_id(schema_id: int) -> dict[str, Any]:
        return {"schema": store.schema(schema_id), "guid": store.guid(schema_id)}

    @app.get("/schemas/ids/{schema_id}/schema")
    async def raw_schema_by_id(schema_id: int) -> PlainTextResponse:
        return PlainTextResponse(store.schema(schema_id), media_type=MEDIA_TYPE)

    @app.get("/schemas/ids/{schema_id}/subjects")
    async def subjects_of_id(schema_id: int) -> list[str]:
        return sorted({v.subject for v in store.usages(schema_id)})

    @app.get("/schemas/ids/{schema_id}/versions")
    async def versions_of_id(schema_id: int) -> list[dict[str, Any]]:
        return [{"subject": v.subject, "version": v.version} for v in store.usages(schema_id)]

    @app.get("/subjects")
    async def subjects(deleted: str | None = None, subjectPrefix: str = "") -> list[str]:
        return store.subjects(_flag(deleted), subjectPrefix)

    @app.post("/subjects/{subject}/versions")
    async def register(subject: str, request: Request) -> dict[str, Any]:
        schema = await _schema_body(request)
        item = store.register(subject, schema, _flag(request.query_params.get("normalize")))
        return described(item)

    @app.post("/subjects/{subject}")
    async def lookup(subject: str, request: Request) -> dict[str, Any]:
        schema = await _schema_body(request)
        params = request.query_params
        return described(store.lookup(subject, schema, _flag(params.get("normalize")),
                                      _flag(params.get("deleted"))))

    @app.get("/subjects/{subject}/versions")
    async def versions(subject: str, deleted: str | None = None) -> list[int]:
        return [v.version for v in store.versions(subject, _flag(deleted))]

    @app.get("/subjects/{subject}/versions/{version}")
    async def version(subject: str, version: str, deleted: str | None = None) -> dict[str, Any]:
        return described(store.version(subject, version, _flag(deleted)))

    @app.get("/subjects/{subject}/versions/{version}/schema")
    async def version_schema(subject: str, version: str) -> PlainTextResponse:
        item = store.version(subject, version)
        return PlainTextResponse(store.schema(item.schema_id), media_type=MEDIA_TYPE)

    @app.delete("/subjects/{subject}")
    async def delete_subject(subject: str, permanent: str | None = None) -> list[int]:
        return store.delete_subject(subject, _flag(permanent))

    @app.delete("/subjects/{subject}/versions/{version}")
    async def delete_version(subject: str, version: str, permanent: str | None = None) -> int:
        return store.delete_version(subject, version, _flag(permanent))

    @app.post("/compatibility/subjects/{subject}/versions/{version}")
    async def compatible_with_version(subject: str, version: str, request: Request
                                      ) -> dict[str, Any]:
        schema = await _schema_body(request)
        problems = store.check(subject, schema, version)
        return _compatibility(problems, _flag(request.query_params.get("verbose")))

    @app.post("/compatibility/subjects/{subject}/versions")
    async def compatible_with_all(subject: str, request: Request) -> dict[str, Any]:
        schema = await _schema_body(request)
        problems = store.check(subject, schema)
        return _compatibility(problems, _flag(request.query_params.get("verbose")))

    @app.get("/config")
    async def global_config() -> dict[str, Any]:
        return {"compatibilityLevel": store.level(None).value}

    @app.put("/config")
    async def set_global_config(request: Request) -> dict[str, Any]:
        return {"compatibility": store.set_level(None, await _level_body(request)).value}

    @app.delete("/config")
    async def delete_global_config() -> dict[str, Any]:
        return {"compatibilityLevel": store.delete_level(None).value}

    @app.get("/config/{subject}")
    async def subject_config(subject: str, defaultToGlobal: str | None = None
                       ) -> dict[str, Any]:
        level = store.subject_level(subject, _flag(defaultToGlobal))
        return {"compatibilityLevel": level.value}

    @app.put("/config/{subject}")
    async def set_subject_config(subject: str, request: Request) -> dict[str, Any]:
        return {"compatibility": store.set_level(subject, await _level_body(request)).value}

    @app.delete("/config/{subject}")
    async def delete_subject_config(subject: str) -> dict[str, Any]:
        store.subject_level(subject, default_to_global=False)
        return {"compatibilityLevel": store.delete_level(subject).value}

    @app.get("/mode")
    async def mode() -> dict[str, Any]:
        return {"mode": "READWRITE"}

    return app


def _compatibility(problems: list[str], verbose: bool) -> dict[str, Any]:
    result: dict[str, Any] = {"is_compatible": not problems}
    if verbose:
        result["messages"] = problems
    return result


async def _level_body(request: Request) -> str:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError:
        raise RegistryError(50005, "Request body is not valid JSON") from None
    level = body.get("compatibility") or body.get("compatibilityLevel")
    if not level:
        raise RegistryError(42203, "Invalid compatibility level: none given")
    return str(level)
