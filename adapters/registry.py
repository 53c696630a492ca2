"""Provider name -> adapter factory. The channels file names the provider."""

from __future__ import annotations

import importlib
from collections.abc import Callable

from adapters.base import AdapterContext, ChannelAdapter
from adapters.sandbox import SandboxAdapter
from server.domain.models import Channel

# Imported on first use, so a deployment pays only for the providers it configures.
_FACTORIES = {
    "twilio": "adapters.twilio:TwilioSmsAdapter",
    "smtp": "adapters.email_smtp:SmtpEmailAdapter",
    "whatsapp": "adapters.whatsapp:WhatsAppCloudAdapter",
    "rbm": "adapters.rbm:RbmAdapter",
}
PROVIDERS = ("sandbox", *_FACTORIES)


def _factory(provider: str) -> Callable[[Channel, AdapterContext], ChannelAdapter]:
    module_name, _, attr = _FACTORIES[provider].partition(":")
    factory: Callable[[Channel, AdapterContext], ChannelAdapter] = getattr(
        importlib.import_module(module_name), attr
    )
    return factory


def build_adapter(
    channel: Channel, ctx: AdapterContext, *, sandbox_delay: float = 0.05
) -> ChannelAdapter:
    if channel.provider == "sandbox":
        sent_log = channel.settings.get("sent_log")
        return SandboxAdapter(
            channel.channel_id,
            delivery_delay=sandbox_delay,
            sent_log=str(sent_log) if sent_log else None,
        )
    if channel.provider not in _FACTORIES:
        known = ", ".join(PROVIDERS)
        raise ValueError(
            f"channel {channel.channel_id}: unknown provider {channel.provider!r}; use {known}"
        )
    return _factory(channel.provider)(channel, ctx)
