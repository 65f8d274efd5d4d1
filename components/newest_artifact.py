"""NewestArtifactStrategy: each input's newest artifact, or none at all without failing.

TFX's `LatestArtifactStrategy` returns None when a channel holds no artifact yet (a home that never
tuned, a first run without an analyzer cache), and the local runner then records the resolver node as
FAILED, so the run would read as failed although every component did its job. An empty list is what
an optional input wants: the consumer runs without it.
"""
from typing import Dict, List

from tfx import types
from tfx.dsl.components.common import resolver


class NewestArtifactStrategy(resolver.ResolverStrategy):
    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]) -> Dict[str, List[types.Artifact]]:
        return {key: sorted(artifacts, key=lambda a: a.id)[-1:] for key, artifacts in input_dict.items()}
