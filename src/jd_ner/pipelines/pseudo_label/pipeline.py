from kedro.pipeline import Pipeline, node

from jd_ner.pipelines.pretrain.pipeline import unlabelled_pipeline

from .nodes import pseudo_label_titles


def create_pipeline(**kwargs) -> Pipeline:
    return unlabelled_pipeline() + Pipeline([
        node(pseudo_label_titles, ["ner_model", "unlabelled_titles", "train_titles",
                                   "params:pseudo_label", "params:evaluate", "params:decode"],
             ["pseudo_titles", "pseudo_label_report"], name="pseudo_label_titles"),
    ])
