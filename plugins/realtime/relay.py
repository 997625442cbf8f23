"""The command relay's rules (API.md "Realtime"): which GUI commands exist, what each role
may send, where refusals and engine replies go. Pure functions and tables, no I/O."""

from __future__ import annotations

import json
from typing import Any

DEFAULT_ENGINE_PLACEHOLDERS = frozenset({"", "null", "local-engine-default"})

#: GUI event → the event name the engine receives.
COMMANDS: dict[str, str] = {name: name for name in (
    "request_presets_list", "save_preset", "delete_preset", "execute_workflow",
    "execute_standalone_node", "stop_workflow", "pause_workflow", "resume_workflow",
    "request_variables", "update_variable", "delete_variable", "request_components_list",
    "install_component", "uninstall_component", "request_settings", "save_settings",
    "request_prompts_list", "update_prompt", "delete_prompt", "request_ai_status",
    "request_datasets_list", "request_local_models", "request_training_job_status",
    "filesystem_list_request", "request_connection_history",
)}
COMMANDS["load_preset"] = "request_load_preset"
RPC_COMMAND = "rpc_forward_to_engine"
RPC_EVENT = "execute_rpc_from_gui"

RUNNER_COMMANDS = frozenset({"execute_workflow", "execute_standalone_node", "stop_workflow",
                             "pause_workflow", "resume_workflow"})

#: Engine → GUI replies relayed as they are.
ENGINE_REPLIES = frozenset({"settings_response", "component_install_status",
                            "FILESYSTEM_LIST_RESPONSE", "CONNECTION_DATA_RESPONSE",
                            "rpc_response_from_engine"})
FORWARD_EVENT = "forward_event_to_gui"
#: Event names an engine may have re-emitted to the GUI through ``forward_event_to_gui``
#: (the GUI's own listeners); never the gateway's own (status, shares, deletion).
GUI_EVENTS = frozenset({"SHOW_DEBUG_POPUP", "WORKFLOW_EXECUTION_UPDATE", "NODE_METRIC_UPDATE",
                        "WORKFLOW_LOG_ENTRY", "JOB_COMPLETED_CHECK", "APPS_RELOADED",
                        "WIDGETS_RELOADED", "COMPONENT_LIST_CHANGED"})

_REPLY_EVENTS = {
    "request_settings": "settings_response",
    "filesystem_list_request": "FILESYSTEM_LIST_RESPONSE",
    "request_connection_history": "CONNECTION_DATA_RESPONSE",
    "install_component": "component_install_status",
    "uninstall_component": "component_install_status",
    RPC_EVENT: "rpc_response_from_engine",
}


#: The sign-in relayed with ``rpc_forward_to_engine`` (``execute_rpc_from_gui``'s ``auth``),
#: which the engine verifies itself: the signature scheme's credential, field → header. The
#: one place outside auth_crypto that names its headers: that scheme publishes no description
#: of its credential's parts yet (``AuthScheme.headers`` is an unlabelled tuple).
RPC_AUTH_FIELDS = {"address": "X-User-Address", "message": "X-Signed-Message",
                   "signature": "X-Signature"}


def rpc_auth(headers: dict[str, str]) -> dict[str, str]:
    """The ``auth`` object relayed with an RPC: the socket's own sign-in."""
    return {field: headers[name] for field, name in RPC_AUTH_FIELDS.items() if name in headers}


def unwrap(data: Any) -> Any:
    """``{"v": 2, "payload": {...}}`` → the payload; anything else as it is."""
    if isinstance(data, dict) and "payload" in data and "v" in data:
        return data["payload"]
    return data


def is_engine_reply(event: str) -> bool:
    return event.startswith("response_") or event in ENGINE_REPLIES


def allowed(role: str, engine_event: str) -> bool:
    """May a user in ``role`` (owner, admin, runner, reader) send ``engine_event``?"""
    if role in ("owner", "admin"):
        return True
    if engine_event.startswith("request_") or engine_event == "filesystem_list_request":
        return role in ("reader", "runner")
    return role == "runner" and engine_event in RUNNER_COMMANDS


def reply_event(engine_event: str) -> str:
    """Where the GUI hears a refusal of ``engine_event``: its reply event, else ``error``."""
    if engine_event in _REPLY_EVENTS:
        return _REPLY_EVENTS[engine_event]
    if engine_event.startswith("request_"):
        return "response_" + engine_event[len("request_"):]
    return "error"


def is_default_target(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip() in DEFAULT_ENGINE_PLACEHOLDERS)


def too_large(data: Any, limit: int) -> bool:
    """Is ``data`` (as decoded JSON) more than ``limit`` bytes of JSON?"""
    if data is None or isinstance(data, (int, float, bool)):
        return False
    if isinstance(data, (str, bytes)):
        return len(data) > limit
    try:
        return len(json.dumps(data, separators=(",", ":"), default=str)) > limit
    except (TypeError, ValueError):
        return True
