"""TLS vocabulary shared by the configuration and the daemon: versions and cipher suite names.

sōzu's configuration names cipher suites the way rustls does (``TLS13_AES_256_GCM_SHA384``,
``TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256``). The daemon terminates TLS with OpenSSL (Python's
``ssl`` module), whose names differ; this table maps one to the other so that the sample
configurations work unchanged, and rejects unknown names with a clear message.
"""

from __future__ import annotations

__all__ = [
    "ALPN_PROTOCOLS",
    "CIPHER_SUITES",
    "DEFAULT_ALPN_PROTOCOLS",
    "DEFAULT_CIPHER_LIST",
    "TLS13_SUITES",
    "check_alpn_protocols",
    "check_cipher_list",
]

# sōzu / rustls / IANA name → OpenSSL name. TLS 1.3 suites keep their IANA names in OpenSSL.
CIPHER_SUITES: dict[str, str] = {
    "TLS13_AES_256_GCM_SHA384": "TLS_AES_256_GCM_SHA384",
    "TLS13_AES_128_GCM_SHA256": "TLS_AES_128_GCM_SHA256",
    "TLS13_CHACHA20_POLY1305_SHA256": "TLS_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384": "ECDHE-ECDSA-AES256-GCM-SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256": "ECDHE-ECDSA-AES128-GCM-SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-ECDSA-CHACHA20-POLY1305",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384": "ECDHE-RSA-AES256-GCM-SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256": "ECDHE-RSA-AES128-GCM-SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256": "ECDHE-RSA-CHACHA20-POLY1305",
}
# The IANA spelling of the TLS 1.3 suites is accepted as well.
CIPHER_SUITES.update({openssl: openssl for openssl in list(CIPHER_SUITES.values())[:3]})

TLS13_SUITES = frozenset(name for name in CIPHER_SUITES if name.startswith("TLS13_")) | frozenset(
    {"TLS_AES_256_GCM_SHA384", "TLS_AES_128_GCM_SHA256", "TLS_CHACHA20_POLY1305_SHA256"}
)

# sōzu's default order (= server preference).
DEFAULT_CIPHER_LIST: tuple[str, ...] = (
    "TLS13_AES_256_GCM_SHA384",
    "TLS13_AES_128_GCM_SHA256",
    "TLS13_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
    "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
    "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
)

# The protocols the proxy speaks over TLS, in sōzu's default order (= server preference).
ALPN_PROTOCOLS: tuple[str, ...] = ("h2", "http/1.1")
DEFAULT_ALPN_PROTOCOLS = ALPN_PROTOCOLS


def check_alpn_protocols(names: list[str]) -> list[str]:
    """``names`` without repeats (the first place of each kept: the order is the server's
    preference); ``ValueError`` for a protocol the proxy does not speak."""
    for name in names:
        if name not in ALPN_PROTOCOLS:
            raise ValueError(
                f"unknown ALPN protocol {name!r} (supported: {', '.join(ALPN_PROTOCOLS)})"
            )
    return list(dict.fromkeys(names))


def check_cipher_list(names: list[str] | tuple[str, ...]) -> None:
    """Raise ``ValueError`` naming the first unknown suite, with the accepted names."""
    if not names:
        raise ValueError("cipher_list must name at least one cipher suite")
    for name in names:
        if name not in CIPHER_SUITES:
            known = ", ".join(sorted(n for n in CIPHER_SUITES if not n.startswith("TLS_AES")))
            raise ValueError(f"unknown cipher suite {name!r}; known suites: {known}")
