"""The pipeline image, built for real with a container engine, and run."""
from kfp_image import pipeline_image, run_in_image  # noqa: F401  (fixture)


def test_image_imports_the_pipeline_and_runs_as_non_root(pipeline_image):
    result = run_in_image(pipeline_image, "python", "-c",
                          "import os, sys, tfx, pipeline, trainer_module, kubeflow; "
                          "print(sys.version_info[:2], tfx.__version__, os.getuid(), os.environ['TF_USE_LEGACY_KERAS'])")
    assert result.returncode == 0, result.stdout[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "(3, 10) 1.16.0 1000 1"


def test_image_gives_tf_io_gfile_an_s3_filesystem(pipeline_image):
    # The .pth hook registers tensorflow-io's plugin as TensorFlow loads: no import of ours needed.
    result = run_in_image(pipeline_image, "python", "-c",
                          "import tensorflow as tf\n"
                          "try:\n    tf.io.gfile.exists('s3://no-such-bucket/x'); print('s3 ok')\n"
                          "except tf.errors.UnimplementedError as e:\n    print('no s3', e)\n"
                          "except Exception as e:\n    print('s3 ok', type(e).__name__)\n"
                          "import os; os._exit(0)",
                          extra=["--env", "S3_ENDPOINT=http://127.0.0.1:9", "--env", "AWS_ACCESS_KEY_ID=x",
                                 "--env", "AWS_SECRET_ACCESS_KEY=y", "--env", "S3_CONNECT_TIMEOUT_MSEC=500"])
    assert result.returncode == 0, result.stdout[-2000:]
    assert result.stdout.strip().splitlines()[-1].startswith("s3 ok"), result.stdout[-2000:]


def test_the_kfp_launchers_local_folders_are_writable_without_emptydirs(pipeline_image):
    """KFP 2.2.0 mounts no emptyDir at /gcs, /minio, /s3 (argocompiler/container.go), yet its launcher
    creates each output's local folder there as the step's user (launcher_v2.go prepareOutputFolders)."""
    result = run_in_image(pipeline_image, "sh", "-c", "mkdir -p /gcs/b/k /minio/b/k /s3/b/k && id -u")
    assert result.returncode == 0, result.stdout[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "1000"
