"""Multi-worker Trainer executor: runs `run_fn` under MultiWorkerMirroredStrategy on N workers.

N == 1 runs in process (TFX's GenericExecutor); N > 1 starts N local worker processes, or a
Kubeflow TFJob when a pipeline image is configured. Import `MultiWorkerExecutor` from
`components.multiworker_trainer.executor`.
"""
