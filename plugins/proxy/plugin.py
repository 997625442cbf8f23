from gateway_kernel import GatewayPlugin


class ProxyPlugin(GatewayPlugin):
    name = "proxy"
    version = "0.1.0"
    description = "Public and authenticated reverse proxies to Core Engines"
