"""Package metadata for taxi-pipeline: a production TFX pipeline ending in TF Serving."""
import setuptools

setuptools.setup(
    name="taxi-pipeline",
    version="0.1.0",
    description="TFX pipeline (Beam locally, Kubeflow in production) that trains, validates and serves a model",
    python_requires=">=3.9,<3.11",
    packages=setuptools.find_packages(include=["pipeline", "pipeline.*", "components", "components.*",
                                               "trainer_module", "trainer_module.*", "serving", "serving.*",
                                               "kubeflow", "kubeflow.*"]),
    package_data={"trainer_module": ["schema/*.pbtxt"], "kubeflow": ["Dockerfile", "manifests/*.yaml"]},
    install_requires=[
        "tfx[kfp]==1.16.0",
        "apache-beam[gcp,aws]==2.59.0",  # aws: Beam's s3:// filesystem (boto3)
        "tensorflow-io==0.37.1",  # tf.io.gfile's s3:// filesystem (TF 2.16)
        "tensorflow-serving-api==2.16.1",
        "tf_keras==2.16.0",
        "matplotlib",
        "psutil",  # progress (child processes) and the scale bench (memory over every process)
        "scikit-learn",  # the TF Lite export's AUC (TFMA brings it too; named because we import it)
        "scipy",  # bench/serving_warmup's sign test (also through TFMA)
    ],
    extras_require={"test": ["pytest", "kubernetes-validate", "import-linter", "prometheus_client", "moto[s3]",
                             "flask", "flask-cors",
                             "hypothesis==6.155.2"]},  # the serving fuzzer (tests/serving/test_serving_fuzz.py)
    entry_points={"console_scripts": ["taxi-pipeline=pipeline.cli:console_main"]},
)
