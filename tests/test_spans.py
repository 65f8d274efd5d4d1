"""Spans without running the pipeline: the folder layouts, make-spans on the real taxi data, which span
runs next and what it trains on, the window resolver on real TFX artifacts, and the warm start's
row matching on real saved models."""
from __future__ import annotations

import collections
import csv

import numpy as np
import pytest
import tensorflow as tf

from components.span_window import SpanWindowStrategy
from pipeline import make_spans, spans
from pipeline.configs import default_data_root
from pipeline.errors import UserError
from trainer_module import features, warm_start
from trainer_module.model import TaxiModel, numeric_inputs


def _folders(root, names):
    for name in names:
        (root / name).mkdir(parents=True)
        (root / name / "data.csv").write_text("a,b\n1,2\n")
    return root


def test_span_and_dated_layouts_are_read_as_tfx_numbers_them(tmp_path):
    numbered = spans.discover(_folders(tmp_path / "n", ["span-2", "span-10", "span-1"]))
    assert numbered.pattern == "span-{SPAN}/*" and numbered.spans == [1, 2, 10]
    dated = spans.discover(_folders(tmp_path / "d", ["2014-01-01", "2013-10-01"]))
    assert dated.pattern == "{YYYY}-{MM}-{DD}/*"
    from tfx.components.example_gen import utils  # TFX's own rule for a dated span's number

    assert dated.spans == [utils.date_to_span_number(2013, 10, 1), utils.date_to_span_number(2014, 1, 1)]
    assert dated.label(dated.spans[0]) == "2013-10-01" and numbered.label(10) == "span-10"


def test_a_plain_folder_is_not_spans_and_mixed_layouts_are_refused(tmp_path):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "data.csv").write_text("a,b\n1,2\n")
    assert spans.discover(plain) is None
    with pytest.raises(spans.SpanLayoutError, match="one layout"):
        spans.discover(_folders(tmp_path / "mixed", ["span-1", "2014-01-01"]))
    loose = _folders(tmp_path / "loose", ["span-1"])
    (loose / "stray.csv").write_text("a,b\n")
    with pytest.raises(spans.SpanLayoutError, match="stray.csv"):
        spans.discover(loose)


def _history(**records):
    return {int(span[1:]): spans.Ingested(int(span[1:]), *record) for span, record in records.items()}


def test_each_run_takes_the_next_new_span_and_trains_on_the_accepted_ones_before_it(tmp_path):
    folders = spans.discover(_folders(tmp_path, [f"span-{n}" for n in range(1, 8)]))
    assert spans.new_spans(folders, {}) == list(range(1, 8))
    history = _history(s1=(True, "r1"), s2=(True, "r2"), s3=(False, "r3", ("AnomaliesGate",)),
                       s4=(True, "r4"), s5=(False, "r5", ("DriftCheck",)))
    assert spans.new_spans(folders, history) == [6, 7]
    # --allow-drift runs the span refused for drift again first; a span with bad data stays refused
    assert spans.new_spans(folders, history, allowed=("DriftCheck",)) == [5, 6, 7]
    assert spans.new_spans(folders, history, allowed=("AnomaliesGate",)) == [6, 7]
    assert spans.training_window(6, history, window=2) == (2, 4)  # span 3 was refused, span 5 too
    assert spans.training_window(6, history, window=4) == (1, 2, 4)
    assert spans.training_window(1, history, window=4) == ()


def test_make_spans_puts_every_row_of_the_taxi_data_in_its_quarter(tmp_path):
    source = default_data_root() / "data.csv"
    counts = make_spans.split(source, tmp_path / "q", "quarter", make_spans.DEFAULT_COLUMN)
    with open(source, newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = list(reader)
    assert len(counts) == 16 and min(counts) == "2013-01-01" and max(counts) == "2016-10-01"
    assert sum(counts.values()) == len(rows)
    written = collections.Counter()
    column = header.index(make_spans.DEFAULT_COLUMN)
    for folder in counts:
        with open(tmp_path / "q" / folder / "data.csv", newline="") as f:
            reader = csv.reader(f)
            assert next(reader) == header
            for row in reader:
                assert make_spans.period_start(row[column], "quarter").isoformat() == folder
                written[tuple(row)] += 1
    assert written == collections.Counter(tuple(r) for r in rows)
    folders = spans.discover(tmp_path / "q")
    assert len(folders.spans) == 16 and folders.pattern == spans.DATE_LAYOUT[0]


def test_make_spans_refuses_a_bad_timestamp_naming_the_line_and_never_overwrites(tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("trip_start_timestamp,fare\n1400269500,3\nyesterday,4\n")
    with pytest.raises(UserError, match="line 3: trip_start_timestamp is 'yesterday'"):
        make_spans.split(bad, tmp_path / "out", "quarter", "trip_start_timestamp")
    good = tmp_path / "good.csv"
    good.write_text("trip_start_timestamp,fare\n1400269500,3\n")
    make_spans.split(good, tmp_path / "again", "month", "trip_start_timestamp")
    with pytest.raises(UserError, match="exists"):
        make_spans.split(good, tmp_path / "again", "month", "trip_start_timestamp")
    with pytest.raises(UserError, match="no column 'when'"):
        make_spans.split(good, tmp_path / "x", "month", "when")


def _examples(span, artifact_id):
    from tfx.types import standard_artifacts

    artifact = standard_artifacts.Examples()
    artifact.id = artifact_id
    artifact.set_int_custom_property("span", span)  # as ExampleGen's driver records it (TFX 1.16)
    return artifact


def test_the_window_resolver_takes_the_newest_ingestion_of_each_named_span():
    artifacts = [_examples(1, 10), _examples(2, 11), _examples(3, 12), _examples(1, 13)]
    resolved = SpanWindowStrategy(spans=[1, 3]).resolve_artifacts(None, {"examples": artifacts})
    assert [a.id for a in resolved["examples"]] == [13, 12]
    with pytest.raises(RuntimeError, match=r"\[4\]"):
        SpanWindowStrategy(spans=[3, 4]).resolve_artifacts(None, {"examples": artifacts})


class _Vocabularies:
    """The one TFTransformOutput method the warm start reads: `vocabulary_by_name`."""

    def __init__(self, vocabularies):
        self.vocabularies = vocabularies

    def vocabulary_by_name(self, name):
        return self.vocabularies[name]


def _cardinalities(vocabularies):
    xf = features.transformed_name
    sizes = {xf(n): features.categorical_cardinality(len(vocabularies[n])) for n in features.CATEGORICAL_FEATURES}
    sizes.update({xf(n): features.bucket_cardinality() for n in features.BUCKET_FEATURES})
    sizes.update({xf(n + features.BUCKET_SUFFIX): features.NUM_FINE_BUCKETS for n in features.FINE_BUCKET_FEATURES})
    return sizes


def _saved_with_assets(model, vocabularies, path):
    model.save(str(path), save_format="tf", save_traces=False)  # as trainer_module/run.py's export saves it
    for name, tokens in vocabularies.items():
        (path / "assets").mkdir(exist_ok=True)
        (path / "assets" / name).write_bytes(b"".join(t + b"\n" for t in tokens))


def _batch(cardinalities, vocabularies, tokens):
    """Rows naming `tokens[i]` of every vocabulary feature (by its index in `vocabularies`), other inputs fixed."""
    rng = np.random.default_rng(0)
    batch = {name: tf.constant(rng.normal(size=len(tokens)), tf.float32) for name in numeric_inputs()}
    for name in cardinalities:
        batch[name] = tf.zeros([len(tokens)], tf.int64)
    for raw in features.CATEGORICAL_FEATURES:
        vocab = vocabularies[raw]
        batch[features.transformed_name(raw)] = tf.constant([vocab.index(t) for t in tokens], tf.int64)
    return batch


def test_a_warm_start_across_reordered_vocabularies_predicts_as_the_base_model(tmp_path):
    tokens = [f"t{i}".encode() for i in range(6)]
    base_vocab = {name: tokens for name in features.CATEGORICAL_FEATURES}
    # The new window's vocabularies: the same tokens in another order (frequencies changed), plus a new one.
    new_vocab = {name: [b"new"] + tokens[::-1] for name in features.CATEGORICAL_FEATURES}
    tf.keras.utils.set_random_seed(1)
    base = TaxiModel(_cardinalities(base_vocab), hidden_units=(8,), embedding_dim=4)
    warm_start.build(base)
    _saved_with_assets(base, base_vocab, tmp_path / "base")

    new = TaxiModel(_cardinalities(new_vocab), hidden_units=(8,), embedding_dim=4)
    warm_start.build(new)
    record = warm_start.warm_start(new, _Vocabularies(new_vocab), str(tmp_path / "base"))
    assert record["warm_start"] is True, record
    assert record["rows"] - record["rows_carried"] == len(features.CATEGORICAL_FEATURES)  # only "new" is fresh
    expected = base(_batch(_cardinalities(base_vocab), base_vocab, tokens)).numpy()
    got = new(_batch(_cardinalities(new_vocab), new_vocab, tokens)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)

    other_sizes = TaxiModel(_cardinalities(new_vocab), hidden_units=(16,), embedding_dim=4)
    warm_start.build(other_sizes)
    cold = warm_start.warm_start(other_sizes, _Vocabularies(new_vocab), str(tmp_path / "base"))
    assert cold["warm_start"] is False and "hidden_0" not in cold["why"] and "other model sizes" in cold["why"]
    assert warm_start.warm_steps(500, record) == 250 and warm_start.warm_steps(500, cold) == 500
