from gateway_kernel import GatewayPlugin


class EnginesPlugin(GatewayPlugin):
    name = "engines"
    version = "0.1.0"
    description = "Engines, tokens, presence, claim flow, kill switch, user state"
