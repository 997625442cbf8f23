from gateway_kernel import GatewayPlugin


class AuthInternalPlugin(GatewayPlugin):
    name = "auth_internal"
    version = "0.1.0"
    description = "Engine principals (X-Engine-Token) and service principals (X-API-Key)"
