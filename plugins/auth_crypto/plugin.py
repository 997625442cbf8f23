from gateway_kernel import GatewayPlugin


class AuthCryptoPlugin(GatewayPlugin):
    name = "auth_crypto"
    version = "0.1.0"
    description = "User principals from Ethereum signatures (legacy message and SIWE)"
