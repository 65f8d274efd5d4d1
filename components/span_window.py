"""SpanWindowStrategy: the ExampleGen outputs of the named spans, the newest ingestion of each.

A resolver strategy (TFX's extension point for input selection, `ResolverStrategy`) rather than TFX's
own `SpanRangeStrategy`: the spans a run trains on are the *accepted* ones (their gates passed), which
the runner reads from ML Metadata before the run (pipeline/spans.py), and a refused span inside the
range must be left out, which a range cannot say. Given the spans, this picks, for each, the newest
artifact of that span (a span ingested twice keeps its newest version), oldest span first.
"""
from typing import Dict, List, Optional

from tfx import types
from tfx.dsl.components.common import resolver

from components.mlmd_properties import span_of


class SpanWindowStrategy(resolver.ResolverStrategy):
    """Resolves each input to the newest artifact of each span in `spans`, oldest span first."""

    def __init__(self, spans: List[int]):
        self._spans = [int(s) for s in spans]

    def resolve_artifacts(self, store, input_dict: Dict[str, List[types.Artifact]]
                          ) -> Optional[Dict[str, List[types.Artifact]]]:
        resolved = {}
        for key, artifacts in input_dict.items():
            newest: Dict[int, types.Artifact] = {}
            for artifact in artifacts:
                span = span_of(artifact.mlmd_artifact)
                if span in self._spans and (span not in newest or artifact.id > newest[span].id):
                    newest[span] = artifact
            missing = sorted(set(self._spans) - set(newest))
            if missing:  # the runner read these from ML Metadata just before the run
                raise RuntimeError(f"span(s) {missing} to train on have no ExampleGen output in ML Metadata")
            resolved[key] = [newest[span] for span in sorted(newest)]
        return resolved
