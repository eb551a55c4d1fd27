"""The one client for the real site (`Upstream`), its lanes of connections and its faults.

May import: `config`, `schema`, `protocol`. Nothing above.
"""

from .client import Upstream, fetch_site_schema, make_upstream
from .health import DOWN_WINDOW, SiteHealth
from .lanes import AUTH, OWN, PASSTHROUGH, TRANSFER, LaneLimits
from .methods import (
    KNOWN_METHODS,
    RETRY_STATUSES,
    SAFE_METHODS,
    UNSAFE_METHODS,
    UpstreamBusy,
    UpstreamUnavailable,
    method_label,
    unavailable_message,
)

__all__ = [
    "AUTH", "DOWN_WINDOW", "KNOWN_METHODS", "OWN", "PASSTHROUGH", "RETRY_STATUSES", "SAFE_METHODS",
    "TRANSFER", "UNSAFE_METHODS", "LaneLimits", "SiteHealth", "Upstream", "UpstreamBusy",
    "UpstreamUnavailable", "fetch_site_schema", "make_upstream", "method_label", "unavailable_message",
]
