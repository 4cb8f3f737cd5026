"""Who may do what: API keys sent as `Authorization: Bearer`, roles, restricted layers.

Endpoints declare what they need with `Depends(require_role("editor"))` (it also documents the
bearer scheme in OpenAPI). Behind that, `access_guard`, a dependency of the whole app, denies by
default: any POST, PUT, PATCH or DELETE route needs at least an `editor` key unless it is a
read-only analysis (listed in `READ_ONLY_POSTS` or declared with
`openapi_extra={READ_ONLY: True}`), so a write endpoint added later cannot be left open by
mistake; and when `public_read` is off every request but the health probes needs a key. Layers
whose metadata says `restricted: true` (gas, power) need a key to be read even when reads are
open: routers serving one layer apply `RestrictedLayerGuard`.

401 means no usable key (none, malformed, unknown or revoked); 403 means a valid key whose role
is too low. Both are problem+json.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.types import ASGIApp, Receive, Scope, Send

from twin.api.params import StoreDep
from twin.api.problems import problem_response
from twin.auth import ApiKey, KeyStore, Role
from twin.config import Settings
from twin.model import Layer, NotFound

WRITE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
READ_ONLY = "x-twin-read-only"  # openapi_extra flag of a POST that changes nothing
READ_ONLY_POSTS = frozenset(
    {
        "/analysis/burst",
        "/analysis/isolation",
        "/analysis/cross-section",
        "/analysis/profile",
        "/analysis/clearance",
    }
)
OPEN_PATHS = frozenset({"/health", "/ready"})  # probes answer even when reads need a key
LAYER_PATH_PARAMETERS = ("collection_id", "layer", "layer_id", "tileset")
STATE_KEY = "twin_api_key"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="cim-twin"'}

bearer_scheme = HTTPBearer(
    auto_error=False,
    scheme_name="apiKey",
    description="An API key made with `twin keys add NAME --role reader|editor|admin`, sent as `Bearer <key>`.",
)


def key_store(request: Request) -> KeyStore:
    return request.app.state.keys


def app_settings(request: Request) -> Settings:
    return request.app.state.settings


def _bearer_token(headers: Iterable[tuple[bytes, bytes]]) -> str | None:
    for name, value in headers:
        if name == b"authorization":
            scheme, _, token = value.decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else ""
    return None


def authenticate(keys: KeyStore, scope: Scope) -> ApiKey | None:
    """The key of this request, checked once and remembered in the request state.

    None without an Authorization header; HTTPException(401) for one that names no active key,
    so that a typo or a revoked key is reported instead of silently treated as anonymous.
    """
    state = scope.setdefault("state", {})
    if STATE_KEY in state:
        return state[STATE_KEY]
    token = _bearer_token(scope.get("headers", ()))
    key = None
    if token is not None:
        key = keys.verify(token)
        if key is None:
            raise HTTPException(401, "the API key is malformed, unknown or revoked", headers=CHALLENGE)
    state[STATE_KEY] = key
    return key


def current_key(
    request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)]
) -> ApiKey | None:
    """The request's key or None (anonymous); the bearer parameter documents the scheme."""
    return authenticate(key_store(request), request.scope)


KeyDep = Annotated[ApiKey | None, Depends(current_key)]


def _missing(role: Role | str) -> HTTPException:
    return HTTPException(
        401,
        f"this needs an API key with the {Role(role).value} role, sent as 'Authorization: Bearer <key>'",
        headers=CHALLENGE,
    )


def check_role(key: ApiKey | None, role: Role | str) -> ApiKey:
    """The key when its role is at least `role`; 401 without a key, 403 with too low a role."""
    if key is None:
        raise _missing(role)
    if not key.role.allows(role):
        raise HTTPException(403, f"the API key {key.id!r} has the {key.role.value} role; this needs {Role(role).value}")
    return key


def require_role(role: Role | str) -> Callable[..., ApiKey]:
    """A dependency that lets through keys with `role` or a higher one (reader < editor < admin)."""
    needed = Role(role)

    def dependency(key: KeyDep) -> ApiKey:
        return check_role(key, needed)

    dependency.__name__ = f"require_{needed.value}"
    return dependency


# ----- restricted layers ------------------------------------------------------------------------
def is_restricted(layer: Layer) -> bool:
    return bool((layer.metadata or {}).get("restricted"))


def may_read(layer: Layer, key: ApiKey | None) -> bool:
    """Open layers are for everyone who may read at all; restricted ones need a key."""
    return key is not None or not is_restricted(layer)


def visible_layers(request: Request, layers: Iterable[Layer]) -> list[Layer]:
    """The layers this request may see, for listings (restricted ones hidden from anonymous)."""
    key = authenticate(key_store(request), request.scope)
    return [layer for layer in layers if may_read(layer, key)]


def restricted_layer_guard(request: Request, store: StoreDep) -> None:
    """Router dependency: 401 for an anonymous request to a restricted layer's path.

    Reads the layer id from the path parameter (`collection_id`, `layer`, `layer_id` or
    `tileset`); an unknown layer is left to the endpoint to answer with 404.
    """
    key = authenticate(key_store(request), request.scope)
    if key is not None:
        return
    for name in LAYER_PATH_PARAMETERS:
        layer_id = request.path_params.get(name)
        if not layer_id:
            continue
        try:
            layer = store.get_layer(layer_id)
        except NotFound:
            return
        if is_restricted(layer):
            raise HTTPException(401, f"layer {layer_id!r} is restricted: send an API key to read it", headers=CHALLENGE)
        return


RestrictedLayerGuard = Depends(restricted_layer_guard)


# ----- deny by default ----------------------------------------------------------------------------
def route_is_read_only(route: Any) -> bool:
    """A write-method route that changes nothing: listed in `READ_ONLY_POSTS` or flagged with
    `openapi_extra={READ_ONLY: True}`."""
    extra = getattr(route, "openapi_extra", None) or {}
    return getattr(route, "path", None) in READ_ONLY_POSTS or bool(extra.get(READ_ONLY))


async def access_guard(request: Request) -> None:
    """App-wide dependency, so it covers every route, also those added later: writes need an
    editor key unless the route is a read-only analysis; with public reads off, everything but
    the health probes needs a key."""
    settings: Settings = request.app.state.settings
    needed: Role | None = None
    if request.method in WRITE_METHODS and not route_is_read_only(request.scope.get("route")):
        needed = Role.editor
    elif not settings.public_read and request.url.path not in OPEN_PATHS:
        needed = Role.reader
    if needed is not None:
        check_role(authenticate(key_store(request), request.scope), needed)


class ClosedReadsMiddleware:
    """When reads are not public, also the parts of the app outside its API routes (mounted
    raster tilers, static pages) answer 401 without a key."""

    def __init__(self, app: ASGIApp, twin_app: FastAPI) -> None:
        self.app = app
        self.twin_app = twin_app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        state = self.twin_app.state
        closed = scope["type"] == "http" and not state.settings.public_read
        if closed and scope["method"] != "OPTIONS" and scope["path"] not in OPEN_PATHS:
            try:
                check_role(authenticate(state.keys, scope), Role.reader)
            except HTTPException as exc:
                response = problem_response(
                    exc.status_code, str(exc.detail), instance=scope["path"], headers=exc.headers
                )
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def install_security(app: FastAPI, settings: Settings, keys: KeyStore) -> None:
    """Keep the settings and keys on the app, guard every route (call before the routers are
    included) and close reads to anonymous clients when the settings say so."""
    app.state.settings = settings
    app.state.keys = keys
    app.router.dependencies.append(Depends(access_guard))
    app.add_middleware(ClosedReadsMiddleware, twin_app=app)
