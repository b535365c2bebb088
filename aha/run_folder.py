"""The files of a run folder (`output_dir`), named once: training writes them; eval, report, export and chat read."""

SUMMARY_FILE = "summary.json"  # what happened: steps, wall time, final metrics, recipe path and overrides
RECIPE_COPY = "recipe.yaml"  # the recipe the run was started from
TENSORBOARD_SUBDIR = "tensorboard"  # TensorBoard event files
