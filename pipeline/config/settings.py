"""One frozen settings object, built from the environment at the edge (the CLI) and passed down.

Nothing else in the package reads `os.environ`. Every value has a default that runs the demo on one
machine; `Settings.describe()` lists them for `geo-pipeline settings` and the README, with the secrets
(the API key, the Kafka SASL password and the TLS key password) redacted. `from_env` refuses, at start,
values that cannot work (out of range, contradicting each other, a key over plain HTTP, a budget the free
tier would punish, Kafka security settings that do not fit together) with one ConfigError naming each
variable and its fix (the rules: checks.py; their bounds and vocabularies: limits.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pipeline.config.checks import refusals
from pipeline.config.fields import Fields
from pipeline.config.limits import words
from pipeline.config.secret import Secret
from pipeline.errors import ConfigError


@dataclass(frozen=True)
class Settings(Fields):
    """Everything a worker needs (the fields: pipeline/config/fields.py), read from the environment;
    `env` in each field's metadata names its variable."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> Settings:
        """Build settings from an environment mapping; a malformed value raises ConfigError naming it."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            name = f.metadata["env"]
            raw = environ.get(name)
            if raw is None or raw == "":
                continue
            try:
                values[f.name] = _PARSERS[f.name](raw) if f.name in _PARSERS else _parse(f.type, raw)
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r} is not valid: {exc}") from None
        values.update(overrides)
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Refuse settings that cannot work: one ConfigError naming each bad variable and how to fix it."""
        found = refusals(self)
        if len(found) == 1:
            raise ConfigError(found[0])
        if found:
            raise ConfigError(f"{len(found)} settings cannot work:\n  " + "\n  ".join(found))

    def describe(self) -> list[tuple[str, str]]:
        """(variable, value) pairs with secrets redacted, for `geo-pipeline settings`."""
        return [(f.metadata["env"], _show(getattr(self, f.name))) for f in fields(self)]


def _show(value: Any) -> str:
    """A value as its environment variable would spell it (lists comma-separated; secrets redacted)."""
    return ",".join(str(v) for v in value) if isinstance(value, tuple) else str(value)


def _parse(kind: Any, raw: str) -> Any:
    text = str(kind)
    if "int" in text and "float" not in text:
        return int(raw)
    if "float" in text:
        return float(raw)
    if "Path" in text:
        return Path(raw).expanduser()
    return raw


_PARSERS: dict[str, Callable[[str], Any]] = {
    "providers": words,
    "forward_networks": words,
    "mmdb": lambda raw: tuple(Path(word).expanduser() for word in words(raw)),
    "ipapi_key": Secret,
    "kafka_security_protocol": lambda raw: raw.strip().upper(),
    "kafka_sasl_mechanism": lambda raw: raw.strip().upper(),
    "kafka_sasl_password": Secret,
    "log_format": lambda raw: raw.strip().lower(),
    "kafka_ssl_key_password": Secret,
    "data_sources": words,
    "ip_fields": words,
    "trusted_proxies": words,
    "output_format": lambda raw: raw.strip().lower(),
    "enriched_key": lambda raw: raw.strip().lower(),
    "maxmind_license_key": Secret,
    "ipinfo_token": Secret,
}
