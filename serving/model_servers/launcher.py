"""Real TF Serving: run `tensorflow_model_server` when it is installed, and the matching `docker run`.

In production the same model directory and the same flags go to TF Serving; printing the
`docker run tensorflow/serving:2.16.1 ...` equivalent lets a user move from the stand-in to the
real server without translating anything.
"""
from __future__ import annotations

import os
import shlex
import shutil
import signal
import subprocess
from typing import List, Optional

TF_SERVING_BINARY = "tensorflow_model_server"
TF_SERVING_IMAGE = "tensorflow/serving:2.16.1"


def find_binary() -> Optional[str]:
    return shutil.which(TF_SERVING_BINARY)


def docker_command(flag_argv: List[str], model_name: Optional[str], base_path: Optional[str],
                   config_file: Optional[str], config_base_paths: List[str], grpc_port: int,
                   rest_port: Optional[int]) -> List[str]:
    """`docker run` serving the same models with the same flags (paths mounted where they are)."""
    cmd = ["docker", "run", "--rm", "-p", f"{grpc_port or 8500}:8500"]
    if rest_port:
        cmd += ["-p", f"{rest_port}:8501"]
    passthrough = [a for a in flag_argv if not a.startswith(("--port=", "--rest_api_port=", "--model_name=",
                                                             "--model_base_path=", "--model_config_file="))]
    mounts = []
    for path in list(config_base_paths) + [os.path.dirname(os.path.abspath(p)) for p in
                                           (config_file, ) if p]:
        path = os.path.abspath(path)
        if path not in mounts:
            mounts.append(path)
    for flag in passthrough:  # files named by flags must exist inside the container too
        if flag.startswith(("--batching_parameters_file=", "--ssl_config_file=", "--monitoring_config_file=")):
            directory = os.path.dirname(os.path.abspath(flag.split("=", 1)[1]))
            if directory not in mounts:
                mounts.append(directory)
    if config_file:
        for path in mounts:
            cmd += ["-v", f"{path}:{path}:ro"]
        cmd += [TF_SERVING_IMAGE, f"--model_config_file={os.path.abspath(config_file)}"]
    else:
        name = model_name or "default"
        cmd += ["-v", f"{os.path.abspath(base_path)}:/models/{name}:ro"]
        for path in mounts:
            cmd += ["-v", f"{path}:{path}:ro"]
        cmd += ["-e", f"MODEL_NAME={name}", TF_SERVING_IMAGE]
    cmd += ["--rest_api_port=8501" if rest_port else "--rest_api_port=0"]  # after the image's own flags: wins
    return cmd + passthrough


def format_command(cmd: List[str]) -> str:
    return " ".join(shlex.quote(c) for c in cmd)


def run_tf_serving(binary: str, flag_argv: List[str]) -> int:
    """Run the real server in the foreground; Ctrl-C/SIGTERM stop it cleanly."""
    env = dict(os.environ)
    process = subprocess.Popen([binary] + flag_argv, env=env)

    def forward(signum, _frame):
        process.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return process.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        if process.poll() is None:
            process.terminate()
            process.wait(timeout=10)
