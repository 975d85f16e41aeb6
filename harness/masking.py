"""Masks secrets before anything is written: results, env.json, MLflow, error messages."""
from __future__ import annotations

import re
from typing import Any

MASK = "****"
_SECRET_NAME = re.compile(r"(key|secret|token|passw|pwd|credential|auth|signature)", re.I)
_URL_USERINFO = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<user>[^:/@\s]+):(?P<pw>[^@/\s]+)@", re.I)
# names that contain "key"/"session" but are not secret; keeping them readable helps users
_NOT_SECRET = re.compile(r"(^|\.)(keytab\.principal|partitionKey|keyspace)$", re.I)


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and not _NOT_SECRET.search(name)


def mask_text(text: str) -> str:
    """Hides passwords in URLs (scheme://user:pw@host) inside free text."""
    return _URL_USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{MASK}@", text)


def mask_mapping(mapping: dict[str, Any]) -> dict[str, Any]:
    """Returns a copy with secret-looking names' values replaced and URL passwords hidden."""
    out = {}
    for k, v in mapping.items():
        if is_secret_name(str(k)) and v not in (None, ""):
            out[k] = MASK
        elif isinstance(v, str):
            out[k] = mask_text(v)
        elif isinstance(v, dict):
            out[k] = mask_mapping(v)
        else:
            out[k] = v
    return out


def secret_values(*mappings: dict[str, Any]) -> list[str]:
    """The raw values that masking hides; used to scrub them from free text such as error messages."""
    vals = []
    for m in mappings:
        for k, v in m.items():
            if is_secret_name(str(k)) and isinstance(v, str) and len(v) >= 4:
                vals.append(v)
    return vals


def scrub(text: str, secrets: list[str]) -> str:
    for s in secrets:
        text = text.replace(s, MASK)
    return mask_text(text)
