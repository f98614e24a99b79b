"""Smashed-data codecs, one per module, looked up by name through the registry.

Every module of this package is imported here, and each registers its codec (and the
dataclass of its options) with ``register_codec``: a new codec is one file plus its test.
"""

import importlib
import pkgutil

from acp_flower.codecs.base import Codec, build_codec, get_codec, list_codecs, register_codec

for _module in sorted(m.name for m in pkgutil.iter_modules(__path__)):
    importlib.import_module(f"{__name__}.{_module}")

__all__ = ["Codec", "build_codec", "get_codec", "list_codecs", "register_codec"]
