# The pipeline's container image for Kubeflow Pipelines / Vertex AI Pipelines (every component)
# and for the Beam workers of the dataflow / flink / spark profiles: the TFX 1.16 image with
# this project at /pipeline (pipeline/kubeflow_runner.py IMAGE_ROOT), installed over the exact
# pins of requirements.lock, so a container runs what `make test` tested.
#
#   docker build -t REGISTRY/recsys-tfx:TAG . && docker push REGISTRY/recsys-tfx:TAG
FROM tensorflow/tfx:1.16.0

ENV TF_USE_LEGACY_KERAS=1 \
    PYTHONHASHSEED=0 \
    PYTHONUNBUFFERED=1

WORKDIR /pipeline

# Dependencies first: this layer is rebuilt only when the lock changes.
COPY requirements.lock setup.py ./
RUN python -m pip install --no-cache-dir -r requirements.lock

# Beam's SDK worker boot binary of the locked Beam version (the base image ships 2.59's), used
# when Dataflow, Flink or Spark start SDK workers from this image.
COPY --from=apache/beam_python3.10_sdk:2.62.0 /opt/apache/beam /opt/apache/beam

# The project (see .dockerignore), including the shipped MovieLens data, the shipped dataset
# descriptions (datasets/) and the schemas that the compiled spec's defaults point at.
COPY . .
RUN python -m pip install --no-cache-dir --no-deps -e . \
 && python -c "import pipeline.pipeline, components.example_gen, transform.preprocessing, training.trainer" \
 && test -f /pipeline/data/movielens-small/ratings.csv \
 && test -f /pipeline/datasets/movielens.yaml \
 && test -f /pipeline/schemas/movielens/schema.pbtxt

# Beam runners start SDK workers through the image's entrypoint; Kubeflow / Vertex tasks set
# their own command (python -m tfx.orchestration.kubeflow.v2.container.kubeflow_v2_run_executor).
ENTRYPOINT ["/opt/apache/beam/boot"]
