"""Values the Kubeflow tests compile with and then look for in the spec."""
IMAGE = "registry.example.com/ml/taxi-pipeline:1.2.3"
PIPELINE_ROOT = "gs://taxi-bucket/pipeline-root"
WORKERS = 3
TRAIN_STEPS = 123
