# Two commands on a fresh machine: `make run` (the whole pipeline on the embedded
# MovieLens data) and `make test`. Both create .venv with Python 3.10 when missing and
# install the exact pins of requirements.lock plus this project; a second call skips
# the install (the stamp file names a hash of the lock and setup.py).
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
PYTHON ?= $(shell pyenv which python3.10 2>/dev/null || command -v python3.10)
LOCK_HASH := $(shell cat requirements.lock setup.py | md5sum | cut -c1-12)
STAMP := $(VENV)/.installed-$(LOCK_HASH)
export TF_USE_LEGACY_KERAS := 1
export PYTHONHASHSEED := 0

.PHONY: run describe test browser docs bench bench-ingest bench-scale bench-mf bench-topk bench-tune bench-install bench-multitask bench-sequential bench-dtrn bench-takd bench-serving bench-catalogue bench-reliability bench-peterrec bench-similar bench-reviews serve update-schema clean install airflow kubeflow-spec

install: $(STAMP)

$(STAMP): requirements.lock setup.py
	@test -n "$(PYTHON)" || { echo "Python 3.10 not found (pyenv 3.10.13 or python3.10 on PATH)"; exit 1; }
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 10), sys.version' \
	  || { echo "$(PYTHON) is not Python 3.10"; exit 1; }
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	@echo "Installing pinned dependencies into $(VENV) (about six minutes the first time)..."
	@$(PY) -m pip install --quiet -r requirements.lock
	@$(PY) -m pip install --quiet --no-deps --no-build-isolation -e .
	@rm -f $(VENV)/.installed-*
	@touch $@

# Another dataset: make run ARGS="--dataset_file my_log.yaml [--data_dir DIR]" (a description
# file; `make describe` drafts one from a sample of the data). The best measured settings
# that cost too much for the default run: make run ARGS="--preset best" (presets/best.yaml).
run: $(STAMP)
	$(PY) -m pipeline.local_runner $(ARGS)

# A draft dataset description from a sample of your files, e.g.
# make describe ARGS="data/my_log.csv [--items data/my_items.csv]"
describe: $(STAMP)
	$(PY) -m components.example_gen.describe $(ARGS)

test: $(STAMP) browser
	$(PY) -m pytest -q -p no:cacheprovider -n 2 --dist loadfile --no-loadscope-reorder tests $(ARGS)

# The report's browser test needs Chromium: the Debian package, installed when missing
# (as root, or through sudo). Set CHROMIUM=/path/to/chromium to use another binary.
browser:
	@test -n "$$CHROMIUM" || command -v chromium >/dev/null || command -v chromium-browser >/dev/null || { \
	  echo "Installing Chromium (Debian package chromium) for the report's browser test..."; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends chromium >/dev/null; }

# docs/benchmarks/ and the README's family table from bench/results (after a benchmark ran).
docs: $(STAMP)
	$(PY) -m bench.render_docs $(ARGS)

bench: bench-ingest bench-mf bench-topk bench-similar bench-serving bench-reliability

bench-ingest: $(STAMP)
	$(PY) -m bench.ingest $(ARGS)

# Every stage of make run (data stages, Trainers, Evaluators, Pushers) at 1x, 4x and 16x
# MovieLens, each Trainer for 2 epochs so its cost per row compares across scales:
# bench/results/scale_pipeline.{json,md}. Add --resume with --scales N to re-measure one scale.
SCALE_EPOCHS := $(foreach f,mf mf_dnn mmoe two_tower,--hparam $(f).max_epochs=2 --hparam $(f).patience=2)
bench-scale: $(STAMP)
	$(PY) -m bench.ingest --scales 1,4,16 --profiles in_process --families default $(SCALE_EPOCHS) \
		--trainer_workers '' --max_rss_gb 20 --name scale_pipeline $(ARGS)

bench-mf: $(STAMP)
	$(PY) -m bench.mf_family $(ARGS)

# Benchmark-only packages (implicit for ALS, LightGBM): not in the runtime lock.
bench-install: $(STAMP)
	$(PY) -m pip install --quiet -r requirements-bench.txt

# Protocol K; the two_tower ensemble that meets the NDCG@10 goal (presets/best.yaml):
# make bench-topk ARGS="--seeds 42,45,48 --preset best --name topk_members"
bench-topk: bench-install
	$(PY) -m bench.topk $(ARGS)

# similar_items: how much genre-set cosine each rating family blends in (eval split).
bench-similar: $(STAMP)
	$(PY) -m bench.similar $(ARGS)

# e.g. make bench-tune ARGS="--family mf --grid dim=32,64 --grid l2=0.05,0.1 --seeds 42,43,44"
bench-tune: $(STAMP)
	$(PY) -m bench.tune $(ARGS)

# The Taobao sample is not shipped (research-use terms): the multi-task benchmarks read it here.
TAOBAO_DIR ?= ../shared/data/taobao-userbehavior-sample

# Multi-task families per task against logistic regression and LightGBM, on MovieLens and
# the Taobao sample (TAOBAO_DIR).
bench-multitask: bench-install
	$(PY) -m bench.multitask --data_dir taobao=$(TAOBAO_DIR) $(ARGS)

# DTRN (task-specific bottoms), its MMoE / PLE variants and ablations against MMoE and PLE.
# e.g. make bench-dtrn ARGS="--datasets taobao --hparam taobao.learning_rate=0.0005 --hparam taobao.refine_gate=sigmoid"
bench-dtrn: $(STAMP)
	$(PY) -m bench.dtrn --data_dir taobao=$(TAOBAO_DIR) $(ARGS)

# TAKD on MovieLens loved / liked: teacher, distilled student, student alone and ablations.
# e.g. make bench-takd ARGS="--seeds 42,43,44,45,46 --hparam takd_student.learning_rate=0.01"
bench-takd: $(STAMP)
	$(PY) -m bench.takd --data_dir taobao=$(TAOBAO_DIR) $(ARGS)

# The Amazon Musical Instruments reviews (datasets/amazon_reviews.yaml; not shipped, research-use
# terms): rating families, two_tower and mmoe against BaselineOnly, SVD, EASE and MostPopular on
# one split in one run (bench/results/amazon_reviews.{json,md}).
AMAZON_REVIEWS_DIR ?= ../shared/data/amazon-musical-instruments-5core
bench-reviews: $(STAMP)
	$(PY) -m bench.reviews --data_dir $(AMAZON_REVIEWS_DIR) $(ARGS)

# Protocol S (next item, leave_last_two_out): sequential families against MostPopular, ItemKNN,
# the last-item Markov chain, ALS, BPR and two_tower (e.g. ARGS="--grid sasrec.learning_rate=0.001,0.003").
bench-sequential: bench-install
	$(PY) -m bench.sequential $(ARGS)

bench-serving: $(STAMP)
	$(PY) -m bench.serving $(ARGS)

# recommend's recall and latency at 10^4, 10^5 and 10^6 items: brute force, ScaNN, faiss.
# e.g. make bench-catalogue ARGS="--sizes 10000,100000 --seconds 5"
bench-catalogue: bench-install
	$(PY) -m bench.catalogue $(ARGS)

bench-peterrec: $(STAMP)
	$(PY) -m bench.peterrec $(ARGS)

# Airflow on this machine: SQLite metadata under outputs/airflow_home, the DAGs of dags/
# (configured by RECSYS_* variables, see pipeline/airflow_runner.py). Parsing the DAG
# imports TFX, which can take longer than Airflow's default 30 s import timeout.
AIRFLOW_ENV := AIRFLOW_HOME=$(CURDIR)/outputs/airflow_home AIRFLOW__CORE__DAGS_FOLDER=$(CURDIR)/dags \
	AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT=300 \
	AIRFLOW__CORE__DAG_FILE_PROCESSOR_TIMEOUT=600

airflow: $(STAMP)
	$(AIRFLOW_ENV) $(VENV)/bin/airflow standalone

kubeflow-spec: $(STAMP)
	$(PY) -m pipeline.kubeflow_runner $(ARGS)

bench-reliability: $(STAMP)
	$(PY) -m bench.reliability $(ARGS)

# The serving base of `make run`, unless ARGS names a --model_config_file.
serve: $(STAMP)
	$(PY) -m serving.local_server $(if $(findstring --model_config_file,$(ARGS)),,--model_base outputs/serving) $(ARGS)

update-schema: $(STAMP)
	$(PY) -m pipeline.update_schema $(ARGS)

clean:
	rm -rf outputs
