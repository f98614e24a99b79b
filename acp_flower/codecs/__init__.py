"""Smashed-data codecs, one per file, looked up by name through the registry."""

from acp_flower.codecs.base import Codec, build_codec, get_codec, list_codecs, register_codec

# Importing the modules registers the codecs.
from acp_flower.codecs import acp, quantize, randtopk, standard  # noqa: E402,F401  isort: skip

__all__ = ["Codec", "build_codec", "get_codec", "list_codecs", "register_codec"]
