"""Pretrained text encoders as backbones."""

from __future__ import annotations


def infos() -> list:
    return []
