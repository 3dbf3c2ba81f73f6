from kedro.pipeline import Pipeline, node

from ..ingest.nodes import parse_test_titles
from .nodes import predict_test, write_submission


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(parse_test_titles, "raw_test", "test_titles", name="parse_test_titles"),
        node(predict_test, ["ner_model", "test_titles", "params:submit"], "test_predictions",
             name="predict_test"),
        node(write_submission, ["test_titles", "test_predictions", "ner_model", "params:decode"],
             "submission", name="write_submission"),
    ])
