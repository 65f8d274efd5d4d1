"""The stand-in server's process leaves its import-time objects out of full GC collections.

A full collection holds the GIL while it walks every tracked object: with TensorFlow imported that is
~330k objects and 165-180 ms (serving/model_servers/main.py freeze_import_time_objects), a stall of the
event loop and of every request in flight. `gc.freeze()` is process-wide, so this runs in a process
of its own, as the server does."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

PROBE = textwrap.dedent("""
    import gc, sys, weakref
    import serving
    from serving.model_servers.main import freeze_import_time_objects
    from serving.servables.servable import SavedModelServable

    freeze_import_time_objects()
    frozen = gc.get_freeze_count()
    servable = SavedModelServable("taxi", 1, sys.argv[1])
    sig = servable.signature("serving_default")
    graph = weakref.ref(servable._graph)
    servable.close()
    del servable, sig
    gc.collect()
    print(frozen, graph() is None)
""")


def test_import_time_objects_are_frozen_and_an_unloaded_version_is_still_collected(taxi_like_base):
    version = next(p for p in sorted((taxi_like_base / "taxi").iterdir()) if p.name.isdigit())
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1", TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-c", PROBE, str(version)], env=env, cwd=str(REPO),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    frozen, collected = done.stdout.split()[-2:]
    assert int(frozen) > 100_000  # TensorFlow's, gRPC's and the protos' objects: out of every full collection
    assert collected == "True"  # a version loaded after the freeze is freed when it unloads: no leak
