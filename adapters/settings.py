"""Channel settings as adapters read them: once, when the channel is built.

Each adapter declares its settings as a frozen dataclass and fills it through
ChannelSettings, which applies the value rules of server.domain.coerce and
names the setting in every refusal. A channel with a bad setting is refused
when it is configured (the config API answers with the field
`settings.<name>`; a channel from the channels file is reported unhealthy)
instead of failing its sends later.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

from server.domain import coerce
from server.domain.models import Channel
from server.net.http import OutboundError, OutboundHttp

__all__ = ["ChannelSettings", "Credential", "Secret", "SettingError"]

_T = TypeVar("_T")


class Secret:
    """A credential that never shows itself in logs, reprs or error messages."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


class SettingError(ValueError):
    """A channel setting is missing or does not fit its rule."""

    def __init__(self, channel_id: str, setting: str, why: str) -> None:
        super().__init__(f"channel {channel_id}: setting {setting!r} {why}")
        self.setting = setting
        self.why = why


@dataclass(frozen=True, slots=True)
class Credential:
    """Where a secret comes from, for one looked up on every use.

    The channels file names an environment variable (`<name>_env`), which
    something outside may refresh (RBM's hour-long access tokens); a
    tenant's channel carries the value itself, which is then fixed.
    """

    channel_id: str
    setting: str
    env_var: str = ""
    fixed: Secret | None = field(default=None, repr=False)

    def current(self, env: Mapping[str, str]) -> Secret:
        if self.fixed is not None:
            return self.fixed
        value = env.get(self.env_var)
        if not value:
            raise SettingError(
                self.channel_id,
                f"{self.setting}_env",
                f"names environment variable {self.env_var}, which is empty or unset",
            )
        return Secret(value)


class ChannelSettings:
    """Reads one channel's settings mapping, each value by its rule.

    A value that is absent or null takes the default; without a default it is
    required. `tenant_owned` channels come from the config API: they carry
    credentials as values and may not name the server's variables or files.
    """

    def __init__(
        self, channel: Channel, env: Mapping[str, str], *, tenant_owned: bool = False
    ) -> None:
        self.channel_id = channel.channel_id
        self._values = channel.settings
        self._env = env
        self.tenant_owned = tenant_owned

    def _read(self, name: str, rule: Any, default: Any) -> Any:
        raw = self._values.get(name)
        if raw is None:
            if default is None:
                raise SettingError(self.channel_id, name, "is required")
            return default
        try:
            return rule(raw)
        except coerce.BadValue as exc:
            raise SettingError(self.channel_id, name, str(exc)) from None

    def has(self, name: str) -> bool:
        return self._values.get(name) is not None

    def text(self, name: str, default: str | None = None) -> str:
        return str(self._read(name, coerce.text, default))

    def flag(self, name: str, default: bool) -> bool:
        return bool(self._read(name, coerce.flag, default))

    def integer(self, name: str, default: int, *, minimum: int = 1, maximum: int = 0) -> int:
        value = int(self._read(name, coerce.integer, default))
        if value < minimum or (maximum and value > maximum):
            span = f"{minimum} to {maximum}" if maximum else f"at least {minimum}"
            raise SettingError(self.channel_id, name, f"must be {span}")
        return value

    def seconds(self, name: str, default: float) -> float:
        return float(self._read(name, coerce.seconds, default))

    def one_of(self, name: str, options: Sequence[str], default: str) -> str:
        return str(self._read(name, lambda raw: coerce.one_of(raw, options), default))

    def url(self, name: str, default: str, *, guard: OutboundHttp | None = None) -> str:
        """An absolute http(s) URL with a host. A tenant's must also pass the guard's
        policy; the adapter's HTTP client holds every connection to it as well."""

        def absolute(raw: Any) -> str:
            value = coerce.text(raw).strip()
            try:
                parts = urlsplit(value)
                host = parts.hostname
            except ValueError:
                host = None
            if parts.scheme not in ("http", "https") or not host:
                raise coerce.BadValue("must be an absolute http(s) URL")
            return value

        url = str(self._read(name, absolute, default))
        if guard is not None and self.tenant_owned:
            try:
                guard.check(url)
            except OutboundError as exc:
                raise SettingError(self.channel_id, name, exc.reason) from exc
        return url

    def server_path(self, name: str) -> str:
        """A file on the server: only the channels file may name one."""
        if self.tenant_owned and name in self._values:
            raise SettingError(
                self.channel_id, name, "is a server path; only the channels file may set it"
            )
        return self.text(name, "")

    def credential(self, name: str) -> Credential:
        """A secret: named by `<name>_env` in the channels file, given as `<name>` by a tenant."""
        env_name = f"{name}_env"
        if self.tenant_owned:
            if env_name in self._values:
                # Refused before any lookup, so the answer never tells whether VAR exists.
                raise SettingError(
                    self.channel_id,
                    env_name,
                    f"names a server environment variable; a tenant channel sends {name} itself",
                )
            given = self._values.get(name)
            if not given or not isinstance(given, str):
                raise SettingError(self.channel_id, name, "is required")
            return Credential(self.channel_id, name, fixed=Secret(given))
        var = self.text(env_name, "")
        if not var:
            raise SettingError(
                self.channel_id,
                env_name,
                "is required (the name of the environment variable holding it)",
            )
        return Credential(self.channel_id, name, env_var=var)

    def secret(self, name: str) -> Secret:
        """A secret read now, once, so a missing one fails when the channel is built."""
        return self.credential(name).current(self._env)
