"""Project settings (Kedro defaults unless stated)."""

import warnings

from jd_ner.hooks import MlflowArtifactsHook

# Deprecation notices from inside kedro / kedro-mlflow / mlflow that users cannot act on.
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated")
warnings.filterwarnings("ignore", message=r".*Add type hints to the `predict` method")

HOOKS = (MlflowArtifactsHook(),)

CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    # conf/local/parameters*.yml may override single nested settings (e.g. only
    # train.optim.epochs) without repeating the rest of the section.
    "merge_strategy": {"parameters": "soft"},
}
