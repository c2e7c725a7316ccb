"""The run settings every stage shares, each default written once here.

The pipeline config (`pipeline/configs.py`) sets them for a run and passes them down to
ExampleGen, the Trainers, the Evaluators and the exported models; a stage used on its own
(a test, a benchmark) falls back to these values.
"""

SEED = 42  # one seed for sampling, initialisation and shuffling
TOP_K = 10  # K of `recommend`, `similar_items`, the top-K metrics and the retrieval gate
