"""Builds the configured provider from :class:`~quarterdeck.config.Settings`.

Provider modules are imported lazily, so a deployment running only the simulated provider never
imports an SDK it does not use, and an import problem in one provider cannot break the others.
"""

from __future__ import annotations

from quarterdeck import metrics
from quarterdeck.config import Settings
from quarterdeck.exceptions import ConfigError
from quarterdeck.providers.pricing import PriceTable, Pricing
from quarterdeck.providers.types import Provider

DEFAULT_PROVIDER_TIMEOUT = 600.0


def build_provider(settings: Settings) -> Provider:
    """The provider named by ``settings.provider_name``: anthropic, openai or simulated."""
    name = settings.provider_name
    if name == "anthropic":
        from quarterdeck.providers.anthropic import AnthropicProvider

        if settings.anthropic_api_key is None:
            raise ConfigError(
                [("ANTHROPIC_API_KEY", "must be set when QUARTERDECK_PROVIDER=anthropic")]
            )
        return AnthropicProvider(
            settings.anthropic_api_key.get_secret_value(),
            base_url=settings.anthropic_base_url,
            timeout=settings.provider_timeout,
        )
    if name == "openai":
        from quarterdeck.providers.openai_compat import OpenAICompatProvider

        base_url = settings.openai_base_url
        if base_url is None:
            raise ConfigError(
                [
                    (
                        "QUARTERDECK_OPENAI_BASE_URL",
                        "must be set when QUARTERDECK_PROVIDER=openai "
                        "(e.g. http://localhost:8000/v1 for vLLM)",
                    )
                ]
            )
        return OpenAICompatProvider(
            base_url,
            api_key=(
                settings.openai_api_key.get_secret_value() if settings.openai_api_key else "none"
            ),
            timeout=settings.provider_timeout,
        )
    if name == "simulated":
        from quarterdeck.providers.simulated import SimulatedProvider

        return SimulatedProvider(
            latency=settings.latency_profile,
            error_rate=settings.simulated_error_rate,
            turns=settings.simulated_turns,
        )
    raise ConfigError([("QUARTERDECK_PROVIDER", f"unknown provider {name!r}")])


def build_pricing(settings: Settings) -> Pricing:
    """The price table with its fallback: what runs and gateway calls alike are priced by."""
    table = PriceTable.load(settings.pricing_overrides or None)
    return Pricing(table, settings.unknown_model_price)


def configure_metric_labels(settings: Settings, pricing: Pricing) -> None:
    """Bound the user-given label values (operation, model, project) for this process."""
    models = {*pricing.models, *settings.metric_models, settings.model}
    for primary, chain in settings.model_fallbacks.items():
        models.update([primary, *chain])
    for primary, chain in settings.context_fallbacks.items():
        models.update([primary, *chain])
    metrics.configure_labels(
        metrics.LabelBounds(
            operations=settings.metric_operations,
            projects=settings.metric_projects,
            models=models,
            resolve_model=pricing.table.resolve,
        )
    )
