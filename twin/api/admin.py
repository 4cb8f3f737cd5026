"""Administration over HTTP (admin keys only): API keys, layer access, effective settings.

The same operations as `twin keys add|revoke|list` and `twin restrict`, for operators who
manage a deployment remotely. A new key's token is in the answer once and never again.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from twin.api.params import StoreDep
from twin.api.problems import problem_responses
from twin.api.security import app_settings, key_store, require_role
from twin.auth import ApiKey, KeyStore, Role, set_restricted
from twin.config import Settings

router = APIRouter(prefix="/admin", tags=["Administration"], dependencies=[Depends(require_role(Role.admin))])
ADMIN_ERRORS = problem_responses(400, 401, 403)


class KeyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64, description="Who or what uses the key")
    role: Role = Field(description="reader, editor or admin")


class KeyRecord(BaseModel):
    id: str
    name: str
    role: Role
    created: str
    revoked: str | None


class NewKey(KeyRecord):
    token: str = Field(description="The key itself: shown only now, keep it secret")


class KeyListing(BaseModel):
    keys: list[KeyRecord]


class LayerAccess(BaseModel):
    model_config = ConfigDict(extra="forbid")

    restricted: bool = Field(description="Whether reading the layer needs an API key")


KeysDep = Annotated[KeyStore, Depends(key_store)]


@router.get("/keys", name="admin_keys", summary="API keys (never their secrets)", response_model=KeyListing,
            responses=ADMIN_ERRORS)  # fmt: skip
def list_keys(keys: KeysDep) -> JSONResponse:
    return JSONResponse({"keys": [key.as_dict() for key in keys.list()]})


@router.post("/keys", name="admin_create_key", summary="Make an API key", status_code=201,
             responses={201: {"model": NewKey, "description": "The key, with its token"}, **ADMIN_ERRORS})  # fmt: skip
def create_key(keys: KeysDep, body: KeyRequest) -> JSONResponse:
    record, token = keys.create(body.name, body.role)
    return JSONResponse({**record.as_dict(), "token": token}, status_code=201)


@router.delete("/keys/{key_id}", name="admin_revoke_key", summary="Revoke an API key (at once)",
               response_model=KeyRecord, responses=problem_responses(401, 403, 404))  # fmt: skip
def revoke_key(keys: KeysDep, key_id: Annotated[str, Path(max_length=64)]) -> JSONResponse:
    return JSONResponse(keys.revoke(key_id).as_dict())


@router.put("/layers/{layer_id}/access", name="admin_layer_access", summary="Restrict or open a layer",
            responses=problem_responses(400, 401, 403, 404))  # fmt: skip
def layer_access(store: StoreDep, layer_id: Annotated[str, Path(max_length=64)], body: LayerAccess) -> JSONResponse:
    layer = set_restricted(store, layer_id, body.restricted)
    return JSONResponse({"layer": layer.id, "restricted": body.restricted})


@router.get("/config", name="admin_config", summary="The settings in force (passwords hidden)",
            responses=problem_responses(401, 403))  # fmt: skip
def config(request: Request, settings: Annotated[Settings, Depends(app_settings)]) -> dict[str, Any]:
    return settings.describe()


__all__ = ["ApiKey", "router"]
