"""The proxy's OpenAPI part: the public proxy routes, and the catch-all's own answers as
reusable responses (the catch-all has no fixed paths; every other answer is the engine's)."""

from __future__ import annotations

from typing import Any

from gateway_kernel.openapi import error, op, path_param

from . import errors
from .resources import ENGINE_HEADER, PUBLIC_PATHS


def openapi_part() -> dict[str, Any]:
    """The public proxy routes (the authenticated catch-all has no fixed paths)."""
    answer = {
        "200": {"description": "The public engine's answer, passed through unchanged "
                               "(cached when its Cache-Control allows)"},
        "default": {"description": "Any other answer of the public engine, passed through"},
        "502": error("The public engine could not be reached", errors.ENGINE_UNREACHABLE),
        "503": error("No public engine configured, it failed repeatedly, or too many requests "
                     "are in flight to it (see Retry-After)",
                     errors.NO_PUBLIC_ENGINE, errors.ENGINE_UNAVAILABLE, errors.ENGINE_BUSY),
        "508": error("The request already passed through this gateway (a proxy loop)",
                     errors.PROXY_LOOP),
        "504": error("The public engine did not answer in time", errors.ENGINE_TIMEOUT),
    }
    params = {
        "/localization/{lang_code}": [path_param("lang_code", "Language code, e.g. en")],
        "/news": [],
        "/components/{type}/{id}/icon": [path_param("type", "Component type"),
                                         path_param("id", "Component id")],
    }
    summaries = {
        "/localization/{lang_code}": "Localization strings (public engine)",
        "/news": "News feed (public engine)",
        "/components/{type}/{id}/icon": "Component icon (public engine)",
    }
    paths: dict[str, Any] = {}
    for path in PUBLIC_PATHS:
        # HEAD is served too (same answer without a body); like the kernel's health route it
        # is not listed separately.
        paths[path] = {"get": op(summaries[path], "public", answer, parameters=params[path],
                                 tags=["proxy"], errors={404: [errors.NOT_FOUND]})}
    # The authenticated catch-all has no fixed path to list; its own answers are described as
    # reusable responses (every other answer is the engine's, passed through).
    catch_all = "Authenticated proxy (any path under /api/v1 that no route owns): "
    responses = {
        "ProxyEngineOffline": error(catch_all + "no online engine for the caller, or the one "
                                    f"named in {ENGINE_HEADER} is offline; see Retry-After",
                                    errors.ENGINE_OFFLINE),
        "ProxyEngineNotFound": error(catch_all + f"{ENGINE_HEADER} names an engine the "
                                     "caller neither owns nor has shared, or the path has dot "
                                     "segments", errors.NOT_FOUND),
        "ProxyEngineUnreachable": error(catch_all + "the engine refused or broke the "
                                        "connection", errors.ENGINE_UNREACHABLE),
        "ProxyEngineTimeout": error(catch_all + "the engine did not answer in time",
                                    errors.ENGINE_TIMEOUT),
        "ProxyEngineUnavailable": error(catch_all + "the engine failed repeatedly and is "
                                        "short-circuited; see Retry-After",
                                        errors.ENGINE_UNAVAILABLE),
        "ProxyEngineBusy": error(catch_all + "too many requests in flight to this engine or "
                                 "from this user (FLOWORK_PROXY_MAX_PER_ENGINE / _PER_USER); "
                                 "see Retry-After", errors.ENGINE_BUSY),
        "ProxyLoop": error(catch_all + "the request already passed through a Flowork gateway "
                           "(its Via header names one)", errors.PROXY_LOOP),
        "ProxyBodyTooLarge": error(catch_all + "the request body exceeds "
                                   "FLOWORK_PROXY_MAX_UPLOAD_BYTES", errors.BODY_TOO_LARGE),
    }
    return {"paths": paths, "components": {"responses": responses}}
