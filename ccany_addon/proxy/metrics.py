"""The proxy's own counters, served at `GET /metrics` in the Prometheus text format (version 0.0.4).

Every label value comes from a bounded set: `/metrics` needs no key, and a label per client-chosen model
name let 5,000 names cost 340 MB of memory and a 341 MB page. A model label is a configured model (a tier
option, a provider's tier model, a route's upstream model or literal pattern), `none` or `other`; a status label
is a known HTTP status or `other`; an error label is a known error type or `other`."""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import TYPE_CHECKING

from ccany_addon.anthropic_api.errors import ERROR_TYPES

if TYPE_CHECKING:
    from ccany_addon.config.snapshot import ConfigSnapshot
    from ccany_addon.upstreams.models import ModelTiers

Labels = tuple[tuple[str, str], ...]
# What the gateway runs with now; read on each observation so a config change needs no callback.
ModelSource = Callable[[], "tuple[ModelTiers, ConfigSnapshot]"]

OTHER = "other"
NO_MODEL = "none"  # the flow log's value for a request refused before it named a model
# 499 is the flow log's "client went away before an answer" (nginx's convention), not in HTTPStatus.
_STATUS_LABELS = {int(status): str(int(status)) for status in HTTPStatus} | {499: "499"}
ERROR_LABELS = frozenset(ERROR_TYPES.values()) | {"client_disconnected", "upstream_disconnected", "interrupted"}
_GLOB = frozenset("*?[")

LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0)


@dataclass(slots=True)
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * len(LATENCY_BUCKETS))
    total: float = 0.0
    count: int = 0

    def observe(self, value: float) -> None:
        index = bisect_left(LATENCY_BUCKETS, value)
        if index < len(LATENCY_BUCKETS):
            self.counts[index] += 1
        self.total += value
        self.count += 1


_HELP = {
    "ccany_requests_total": ("counter", "Client requests answered, by upstream model and status."),
    "ccany_errors_total": ("counter", "Client requests that ended in an error, by Anthropic error type."),
    "ccany_tokens_total": ("counter", "Tokens reported for answered requests, by upstream model and kind."),
    "ccany_request_duration_seconds": ("histogram", "Client request to last byte, by upstream model."),
    "ccany_time_to_first_token_seconds": ("histogram", "Client request to first token sent, by upstream model."),
    "ccany_log_queue_depth": ("gauge", "Flows waiting to be written to the flow log."),
    "ccany_log_queue_bytes": ("gauge", "Bytes of bodies waiting to be written to the flow log."),
    "ccany_log_written_total": ("counter", "Flows written to the flow log."),
    "ccany_log_dropped_total": ("counter", "Flows not logged because the log queue was full."),
    "ccany_log_failed_total": ("counter", "Flows that could not be written to the flow log."),
    "ccany_shared_state_up": ("gauge", "0 while Redis does not answer and this process counts limits and budgets "
                              "alone; else 1."),
    "ccany_shared_state_outages_total": ("counter", "Times the shared state (Redis) stopped answering."),
    "ccany_admitted_ahead_total": ("counter", "Requests of a busy client key admitted on Redis's answer of a moment "
                                   "ago, without waiting for Redis."),
    "ccany_limited_total": ("counter", "Requests refused by a client key's limit or budget, by reason."),
}


def configured_models(tiers: ModelTiers, snapshot: ConfigSnapshot) -> frozenset[str]:
    """Every model name the configuration can send upstream; a pattern without wildcards is a name too,
    since a route without an upstream model passes the client's (matching) name on."""
    names = {tiers.big, tiers.middle, tiers.small}
    for provider in snapshot.providers.values():
        names.update(provider.models.values())
    for route in snapshot.routes:
        names.add(route.upstream_model or "")
        if _GLOB.isdisjoint(route.pattern):
            names.add(route.pattern)
    names.discard("")
    return frozenset(names)


class Metrics:
    def __init__(self, models: ModelSource | None = None) -> None:
        self._counters: dict[str, dict[Labels, float]] = {}
        self._histograms: dict[str, dict[Labels, _Histogram]] = {}
        self.gauges: dict[str, Callable[[], float]] = {}  # read at scrape time
        self._models = models
        self._models_of: tuple[object, object] | None = None  # the (tiers, snapshot) _known was built from
        self._known: frozenset[str] = frozenset({NO_MODEL})

    def set_known_models(self, models: Iterable[str]) -> None:
        """The model names that keep their own label (swapped whole: observations never see half a set)."""
        self._known = frozenset(models) | {NO_MODEL}

    def model_label(self, model: str) -> str:
        if self._models is not None:
            tiers, snapshot = self._models()
            # Both are replaced whole on a change (frozen tiers, a new snapshot per config read): identity suffices.
            if self._models_of is None or self._models_of[0] is not tiers or self._models_of[1] is not snapshot:
                self.set_known_models(configured_models(tiers, snapshot))
                self._models_of = (tiers, snapshot)
        return model if model in self._known else OTHER

    def count(self, name: str, labels: Labels = (), value: float = 1) -> None:
        series = self._counters.setdefault(name, {})
        series[labels] = series.get(labels, 0) + value

    def observe(self, name: str, labels: Labels, value: float) -> None:
        series = self._histograms.setdefault(name, {})
        histogram = series.get(labels)
        if histogram is None:
            histogram = series[labels] = _Histogram()
        histogram.observe(value)

    def observe_flow(
        self,
        model: str,
        status: int,
        error_type: str | None,
        usage: dict,
        duration: float,
        ttft: float | None,
    ) -> None:
        model = self.model_label(model)
        by_model = (("model", model),)
        self.count("ccany_requests_total", (("model", model), ("status", _STATUS_LABELS.get(status, OTHER))))
        if error_type:
            self.count("ccany_errors_total", (("type", error_type if error_type in ERROR_LABELS else OTHER),))
        for kind in ("input", "output", "cache_read_input"):
            tokens = usage.get(f"{kind}_tokens")
            if tokens:
                self.count("ccany_tokens_total", (("model", model), ("kind", kind.removesuffix("_input"))), tokens)
        self.observe("ccany_request_duration_seconds", by_model, duration)
        if ttft is not None:
            self.observe("ccany_time_to_first_token_seconds", by_model, ttft)

    def render(self) -> str:
        lines: list[str] = []
        names = sorted({*self._counters, *self._histograms, *self.gauges} | {n for n in _HELP if "_log_" in n})
        for name in names:
            kind, help_text = _HELP.get(name, ("untyped", ""))
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            if name in self.gauges:
                lines.append(f"{name} {_number(self.gauges[name]())}")
            for labels, value in sorted(self._counters.get(name, {}).items()):
                lines.append(f"{name}{_labels(labels)} {_number(value)}")
            for labels, histogram in sorted(self._histograms.get(name, {}).items()):
                cumulative = 0
                for bound, count in zip(LATENCY_BUCKETS, histogram.counts, strict=True):
                    cumulative += count
                    lines.append(f"{name}_bucket{_labels(labels + (('le', _number(bound)),))} {cumulative}")
                lines.append(f"{name}_bucket{_labels(labels + (('le', '+Inf'),))} {histogram.count}")
                lines.append(f"{name}_sum{_labels(labels)} {_number(histogram.total)}")
                lines.append(f"{name}_count{_labels(labels)} {histogram.count}")
        return "\n".join(lines) + "\n"


def _labels(labels: Labels) -> str:
    if not labels:
        return ""
    escaped = (
        f'{key}="{value.replace("\\", "\\\\").replace("\"", "\\\"").replace("\n", "\\n")}"' for key, value in labels
    )
    return "{" + ",".join(escaped) + "}"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
