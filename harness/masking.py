"""Masks secrets before anything is written or printed: results, env.json, MLflow, messages.

The rule starts from Spark's own: `spark.redaction.regex` defaults to `(?i)secret|password|token|access[.]?key`
(spark-core, `org.apache.spark.internal.config`), matched anywhere in a conf key. Kept beyond Spark's rule,
because this stack's own names hold secrets Spark's misses: `credential` (GOOGLE_APPLICATION_CREDENTIALS,
`*.credentials.*` confs), `passwd`, a `_pwd`/`.pwd` suffix (MYSQL_PWD), `api`/`private`/`account` keys (Azure's
`fs.azure.account.key.<account>`), `signature` and `sas` (signed URLs, Azure SAS confs). Not kept: a bare `pwd`
(PWD is the current directory), `auth` and `key` alone (spark.authenticate, serviceAccountName, keytab...).
A name for where a secret lives (`..._FILE`, `...File`, `...Location`, `...Path`, `...Dir`), such as
HADOOP_TOKEN_FILE_LOCATION, is a path, not a secret, and stays readable.

Values are never masked whole for merely containing a word (Spark's rule would hide a path holding "token");
the secret parts inside them are: URL passwords (`scheme://user:pw@`), and `name=value` / `name: value` pairs
whose name is secret, which covers JVM options (`-Dfs.s3a.secret.key=...`), spark-submit arguments and query
strings. Spark's `spark.redaction.string.regex` has no default, so free text (error messages) gets the same
value patterns plus every known secret value (`secret_values`).
"""
from __future__ import annotations

import re
from typing import Any

MASK = "****"
SPARK_REDACTION_REGEX = r"secret|password|token|access[.]?key"
_SECRET_NAME = re.compile(SPARK_REDACTION_REGEX + r"|credential|passwd|[._-]pwd([._-]|$)"
                          r"|(api|private|account)[._-]?key|signature|(^|[._-])sas([._-]|$)", re.I)
# a name that says where a secret is kept (HADOOP_TOKEN_FILE_LOCATION, oauthTokenFile) names a path, not a secret
_SECRET_LOCATION = re.compile(r"(?:[._-](?i:file|location|path|dir)s?|(?<=[a-z])(?:File|Location|Path|Dir)s?)$")
# scheme://user:PASSWORD@host; a password may itself hold '@' (the host starts after the last one)
_URL_PASSWORD = re.compile(r"[a-z][a-z0-9+.-]*://[^:/@\s]*:(?P<value>[^/\s]+)(?=@[^@/\s]*(?:[/?#\s]|$))", re.I)
# name=value or name: value, either side optionally quoted; the value is masked when is_secret_name(name).
# Only `name=` is consumed by the scan, so a pair inside another's value (a URL's query) is found too.
_PAIR_NAME = re.compile(r"""(?P<name>[A-Za-z_][\w.-]*)["']?\s*(?:=|:(?!//))\s*""")
_PAIR_VALUE = re.compile(r""""(?P<dq>[^"\n]+)"|'(?P<sq>[^'\n]+)'|(?P<value>[^\s"',;&)}\]]+)""")


def spark_redaction_regex() -> str:
    """This rule as Spark's own `spark.redaction.regex` (a Java regex matched against conf keys and values), so what
    Spark writes itself, its event log, hides what the harness masks: secret names, and values holding a URL
    password or a secret name (Spark then hides the whole value)."""
    return "(?i)" + _SECRET_NAME.pattern + r"|://[^:/@\s]*:[^/@\s]+@"


def is_secret_name(name: str) -> bool:
    return bool(_SECRET_NAME.search(name)) and not _SECRET_LOCATION.search(name)


def _secret_spans(text: str) -> list[tuple[int, int]]:
    """Where the secret values inside a string are: URL passwords and the values of secret-named pairs."""
    spans = [m.span("value") for m in _URL_PASSWORD.finditer(text)]
    for name in _PAIR_NAME.finditer(text):
        if is_secret_name(name["name"]) and (value := _PAIR_VALUE.match(text, name.end())):
            spans.append(value.span(value.lastgroup))
    return sorted(spans)


def mask_text(text: str) -> str:
    """Hides the secret parts of a string (URL passwords, secret name=value pairs); the rest stays readable."""
    out, last = [], 0
    for start, end in _secret_spans(text):
        if start >= last:
            out += [text[last:start], MASK]
        last = max(last, end)  # overlapping spans: one mask up to the furthest end
    return "".join(out) + text[last:]


def mask_value(name: str, value: Any) -> Any:
    """One setting's value as it may be written: masked whole under a secret name, else its secret parts."""
    if is_secret_name(str(name)) and value not in (None, ""):
        return MASK
    if isinstance(value, str):
        return mask_text(value)
    if isinstance(value, dict):
        return mask_mapping(value)
    return value


def mask_mapping(mapping: dict[str, Any]) -> dict[str, Any]:
    """A copy with secret-named values replaced and secret parts of the other values hidden."""
    return {k: mask_value(k, v) for k, v in mapping.items()}


def secret_values(*mappings: dict[str, Any]) -> list[str]:
    """The raw values that masking hides (whole secret-named values and secret parts of the others); used to
    scrub them from free text such as error messages. Very short values are left out: they'd mask everything."""
    found = set()
    for m in mappings:
        for k, v in m.items():
            if not isinstance(v, str):
                continue
            if is_secret_name(str(k)):
                found.add(v)
            found.update(v[start:end] for start, end in _secret_spans(v))
    return sorted((v for v in found if len(v) >= 4), key=len, reverse=True)


def scrub(text: str, secrets: list[str]) -> str:
    """Free text with the known secret values and any secret-looking parts replaced."""
    for s in sorted(secrets, key=len, reverse=True):  # longest first: a secret may contain another
        text = text.replace(s, MASK)
    return mask_text(text)
