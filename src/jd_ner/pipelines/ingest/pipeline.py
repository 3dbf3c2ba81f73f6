from kedro.pipeline import Pipeline, node

from .nodes import parse_labelled_titles, split_titles


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(parse_labelled_titles, ["raw_train", "params:ingest"],
             ["labelled_titles", "ingest_report"], name="parse_labelled_titles"),
        node(split_titles, ["labelled_titles", "params:ingest", "params:final_fit"],
             ["train_titles", "dev_titles", "test_titles"], name="split_titles"),
    ])
