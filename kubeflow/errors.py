"""The kubeflow layer's one error: a spec, image name, pipeline root or endpoint that cannot be used.

Its message is the line the user sees (the pipeline's CLI prints it and exits 2).
"""


class KubeflowError(Exception):
    """Something the user gave (or the cluster answered) stops compile/submit: says what and what to do."""
