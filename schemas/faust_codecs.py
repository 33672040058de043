"""Faust codecs for the v1 contracts: `value_serializer="intent"` (or "click", "dead_letter") on a topic.

Importing this module registers them. It is the only file in schemas/ that imports Faust.

The worker's click agent does NOT use the "click" codec: it consumes raw bytes and calls
`decode_click` itself, because a bad message must reach the dead-letter topic with its original bytes
rather than fail inside Faust's deserializer. The "click" codec is for producers and tests; its loads
raises ValueError on a bad message.
"""
from __future__ import annotations

from typing import Any

from faust.serializers import codecs

from schemas.codec import (
    DecodeError,
    decode_click,
    decode_dead_letter,
    decode_intent,
    encode_click,
    encode_dead_letter,
    encode_intent,
)


class ClickCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return encode_click(obj)

    def _loads(self, s: bytes) -> Any:
        result = decode_click(s)
        if isinstance(result, DecodeError):
            raise ValueError(f"{result.code}: {result.message}")
        return result


class IntentCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return encode_intent(obj)

    def _loads(self, s: bytes) -> Any:
        return decode_intent(s)


class DeadLetterCodec(codecs.Codec):
    def _dumps(self, obj: Any) -> bytes:
        return encode_dead_letter(obj)

    def _loads(self, s: bytes) -> Any:
        return decode_dead_letter(s)


CODECS = {"click": ClickCodec, "intent": IntentCodec, "dead_letter": DeadLetterCodec}


def register_codecs() -> None:
    """Register (or re-register) the codecs under their names; safe to call more than once."""
    for name, cls in CODECS.items():
        codecs.register(name, cls())


register_codecs()
