"""Installs the pipeline's packages; exact dependency pins live in requirements.lock."""
from setuptools import find_packages, setup

setup(
    name="recsys-tfx",
    version="0.1.0",
    description="TFX pipeline from raw interaction logs to served multi-task recommenders",
    python_requires=">=3.10,<3.11",
    packages=find_packages(include=["contract*", "common*", "components*", "transform*", "models*", "training*", "evaluation*", "export*", "pipeline*", "serving*", "bench*"]),
    package_data={"": ["*.pbtxt", "*.json"]},
    include_package_data=True,
)
