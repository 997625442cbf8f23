from gateway_kernel import GatewayPlugin


class SharingPlugin(GatewayPlugin):
    name = "sharing"
    version = "0.1.0"
    requires = ("engines",)
    description = "Engine shares and workflow share links"
