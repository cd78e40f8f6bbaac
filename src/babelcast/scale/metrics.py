"""/metrics of a replicated server: each replica posts its Prometheus text to one board actor every routing
period; the ingress answers /metrics with every live replica's samples, each labelled with its model and
replica (model="<name>", replica="<id>"; sum them in PromQL for the fleet)."""
from __future__ import annotations

import time

BOARD_NAME = "babelcast-metrics"
NAMESPACE = "babelcast"
STALE_S = 5.0  # a replica silent this long is gone (dead or removed): its samples are dropped


class MetricsBoard:
    """A Ray actor: the latest exposition of each replica, with its model and when it came."""

    def __init__(self):
        self.texts: dict[str, tuple[float, str, str]] = {}

    def post(self, replica: str, model: str, text: str) -> None:
        self.texts[replica] = (time.monotonic(), model, text)

    def live(self) -> dict[str, tuple[str, str]]:
        """replica → (model, text) of the replicas heard from within STALE_S."""
        now = time.monotonic()
        self.texts = {r: posted for r, posted in self.texts.items() if now - posted[0] < STALE_S}
        return {r: (model, text) for r, (_, model, text) in self.texts.items()}


def board():
    """The cluster's board, created by whichever replica asks first (detached: it outlives any replica)."""
    import ray

    return ray.remote(MetricsBoard).options(name=BOARD_NAME, namespace=NAMESPACE, get_if_exists=True,
                                            lifetime="detached", num_cpus=0).remote()


def remove_board() -> None:
    """End the board (when the deployment is removed)."""
    import ray

    try:
        ray.kill(ray.get_actor(BOARD_NAME, namespace=NAMESPACE))
    except ValueError:  # never created
        pass


def merged(texts: dict[str, tuple[str, str]]) -> bytes:
    """One exposition of several replicas' (model, text): each family once, every sample labelled with its
    model and replica."""
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    from prometheus_client.samples import Sample

    families: dict[str, object] = {}
    for replica, (model, text) in sorted(texts.items()):
        for family in text_string_to_metric_families(text):
            labels = {"model": model, "replica": replica}
            samples = [Sample(s.name, {**s.labels, **labels}, s.value, s.timestamp, s.exemplar)
                       for s in family.samples]
            if family.name in families:
                families[family.name].samples += samples
            else:
                family.samples = samples
                families[family.name] = family

    class Collected:
        def collect(self):
            return list(families.values())

    registry = CollectorRegistry(auto_describe=False)
    registry.register(Collected())
    return generate_latest(registry)
