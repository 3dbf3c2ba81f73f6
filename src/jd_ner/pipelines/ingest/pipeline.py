from kedro.pipeline import Pipeline, node

from .nodes import parse_labelled_titles, split_train_dev


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(parse_labelled_titles, ["raw_train", "params:ingest"],
             ["labelled_titles", "ingest_report"], name="parse_labelled_titles"),
        node(split_train_dev, ["labelled_titles", "params:ingest"],
             ["train_titles", "dev_titles"], name="split_train_dev"),
    ])
