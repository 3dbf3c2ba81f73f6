from kedro.pipeline import Pipeline, node

from ..evaluate.nodes import predict_titles
from ..ingest.nodes import parse_test_titles
from .nodes import write_submission


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(parse_test_titles, "raw_test", "submit_titles", name="parse_submit_titles"),
        node(predict_titles, ["ner_model", "submit_titles", "params:submit"], "submit_predictions",
             name="predict_submit_titles"),
        node(write_submission, ["submit_titles", "submit_predictions", "ner_model", "params:decode"],
             "submission", name="write_submission"),
    ])
