"""The pipeline layer's errors; `pipeline/cli.py` alone turns them into messages and exit codes.

Lower layers have their own (`serving.util.errors.ServerConfigError`, `kubeflow.errors.KubeflowError`,
`components.errors.BadDataError`); the CLI treats those as bad input too.
"""


class UserError(Exception):
    """Bad input or a missing prerequisite (exit 2): name what is wrong and what to do, in one line."""


class ComponentFailed(Exception):
    """A component failed for a reason that is not the input's (exit 1): the message names it and the log."""
