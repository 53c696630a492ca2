"""Provider name -> adapter factory. The channels file names the provider."""

from __future__ import annotations

import importlib
from typing import Protocol

from adapters.base import AdapterContext, ChannelAdapter
from adapters.sandbox import SandboxAdapter, SandboxSettings
from server.domain.models import Channel

# Imported on first use, so a deployment pays only for the providers it configures.
_FACTORIES = {
    "twilio": "adapters.twilio:TwilioSmsAdapter",
    "smtp": "adapters.email_smtp:SmtpEmailAdapter",
    "whatsapp": "adapters.whatsapp:WhatsAppCloudAdapter",
    "rbm": "adapters.rbm:RbmAdapter",
}
PROVIDERS = ("sandbox", *_FACTORIES)


class _Factory(Protocol):
    def __call__(
        self, channel: Channel, ctx: AdapterContext, *, tenant_owned: bool = False
    ) -> ChannelAdapter: ...


def _factory(provider: str) -> _Factory:
    module_name, _, attr = _FACTORIES[provider].partition(":")
    factory: _Factory = getattr(importlib.import_module(module_name), attr)
    return factory


def build_adapter(
    channel: Channel,
    ctx: AdapterContext,
    *,
    sandbox_delay: float = 0.05,
    tenant_owned: bool = False,
) -> ChannelAdapter:
    """The channel's adapter. A tenant-owned one takes its credentials from values in
    the settings, never from the server's environment, and connects only to
    addresses the outbound policy of ctx.fetcher allows."""
    if channel.provider == "sandbox":
        settings = SandboxSettings.parse(channel, tenant_owned=tenant_owned)
        return SandboxAdapter(
            channel.channel_id,
            delivery_delay=sandbox_delay,
            sent_log=settings.sent_log,
            report=settings.report,
        )
    if channel.provider not in _FACTORIES:
        known = ", ".join(PROVIDERS)
        raise ValueError(
            f"channel {channel.channel_id}: unknown provider {channel.provider!r}; use {known}"
        )
    return _factory(channel.provider)(channel, ctx, tenant_owned=tenant_owned)
