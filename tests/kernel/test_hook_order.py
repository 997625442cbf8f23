"""The documented hook order (gateway_kernel/hookspecs.py, "Call order") is the order pluggy
calls: plugin load order, for lifecycle hooks, merged hooks, per-plugin collection and
firstresult hooks alike; tryfirst is the deliberate exception."""

from __future__ import annotations

from gateway_kernel import GatewayPlugin, Route, hookimpl


class Recorder(GatewayPlugin):
    version = "1"

    def __init__(self, name: str, log: list[tuple[str, str]], answers: bool = True) -> None:
        self.name = name  # type: ignore[misc]
        self.log = log
        self.answers = answers

    @hookimpl
    def gateway_configure(self, gateway) -> None:
        self.log.append(("configure", self.name))

    @hookimpl
    def gateway_startup(self, gateway) -> None:
        self.log.append(("startup", self.name))

    @hookimpl
    def gateway_shutdown(self, gateway) -> None:
        self.log.append(("shutdown", self.name))

    @hookimpl
    def gateway_user_permissions(self, gateway, account) -> list[str]:
        return [f"perm_{self.name}"]

    @hookimpl
    def gateway_routes(self, gateway) -> list[Route]:
        self.log.append(("routes", self.name))
        return []

    @hookimpl
    def gateway_resolve_account(self, gateway, identifier):
        if identifier != "who" or not self.answers:
            return None
        return gateway.ensure_account(f"acct_{self.name}")


class Eager(Recorder):
    @hookimpl(tryfirst=True)
    def gateway_configure(self, gateway) -> None:
        self.log.append(("configure", self.name))


def test_hooks_run_in_load_order(make_gateway):
    log: list[tuple[str, str]] = []
    plugins = [Recorder("p_one", log, answers=False), Recorder("p_two", log),
               Recorder("p_three", log)]
    gateway = make_gateway(plugins="auth_crypto", extra_plugins=plugins)
    names = ["p_one", "p_two", "p_three"]
    assert [n for step, n in log if step == "configure"] == names
    assert [n for step, n in log if step == "routes"] == names
    assert [n for step, n in log if step == "startup"] == names
    assert [name for name, _routes in gateway._per_plugin("gateway_routes", gateway=gateway)
            if name.startswith("p_")] == names

    with gateway.using_db():
        account = gateway.ensure_account("someone")
        perms = gateway.user_permissions(account)
        # auth_crypto is loaded first: its permissions come first, then each extra in order.
        assert perms[-3:] == ["perm_p_one", "perm_p_two", "perm_p_three"]
        assert perms.index("perm_p_one") > 0
        # firstresult: the first plugin in load order that answers wins (p_one declines).
        assert gateway.find_account("who").address == "acct_p_two"

    gateway.close()
    assert [n for step, n in log if step == "shutdown"] == names


def test_tryfirst_is_the_deliberate_exception(make_gateway):
    log: list[tuple[str, str]] = []
    make_gateway(plugins="auth_crypto",
                 extra_plugins=[Recorder("p_one", log), Eager("p_eager", log)])
    assert [n for step, n in log if step == "configure"] == ["p_eager", "p_one"]
