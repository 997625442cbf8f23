"""The plugins shipped with Flowork Gateway (importable as ``gateway_plugins.<name>``).

Importing this package is light (``flowork-gateway --help`` reads :data:`BUNDLED`); each
plugin is imported only when enabled.
"""

#: The plugins ``FLOWORK_PLUGINS=bundled`` (the default) enables, in load order: published as
#: the ``bundled`` entry point of the ``flowork_gateway.bundles`` group (pyproject.toml). The
#: kernel names no plugin itself.
BUNDLED: tuple[str, ...] = ("auth_crypto", "auth_internal", "engines", "killswitch",
                            "user_state", "sharing", "proxy", "ratelimit", "realtime")
