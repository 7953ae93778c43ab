"""The wipeable buffer type for PINs, key material and plaintext, and the wiping primitive."""

from kms_iface._pkcs11 import SecretBytes, wipe

__all__ = ["SecretBytes", "wipe"]
