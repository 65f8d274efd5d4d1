"""The Evaluator reuses an evaluation only when re-running it could not change the verdict."""
from pipeline import configs
from pipeline.pipeline import eval_config


def _json(config):
    from tfx.utils import proto_utils

    return proto_utils.proto_to_json(config)


def test_zero_change_passes_our_no_regression_threshold_but_not_a_required_improvement():
    import tensorflow_model_analysis as tfma

    from components.reusing_evaluator import zero_change_passes

    ours = eval_config(configs.PipelineConfig())
    assert zero_change_passes(_json(ours))  # "no worse than the baseline by more than 0.001"
    stricter = eval_config(configs.PipelineConfig(auc_regression_tolerance=-0.01))  # must improve by 0.01
    assert not zero_change_passes(_json(stricter))
    lower = tfma.EvalConfig(metrics_specs=[tfma.MetricsSpec(metrics=[tfma.MetricConfig(
        class_name="MeanSquaredError", threshold=tfma.MetricThreshold(change_threshold=tfma.GenericChangeThreshold(
            direction=tfma.MetricDirection.LOWER_IS_BETTER, absolute={"value": -0.5})))])])
    assert not zero_change_passes(_json(lower))
