from kedro.pipeline import Pipeline, node

from .nodes import (
    plot_learning_curve,
    plot_per_type_f1,
    predict_titles,
    score_titles,
    summarise_evaluation,
)


def create_pipeline(**kwargs) -> Pipeline:
    nodes = []
    for split in ("dev", "test"):
        nodes += [
            node(predict_titles, ["ner_model", f"{split}_titles", "params:evaluate"],
                 f"{split}_predictions", name=f"predict_{split}"),
            node(score_titles, [f"{split}_predictions", f"{split}_titles", "params:decode",
                                "params:evaluate"],
                 [f"{split}_metrics", f"{split}_per_type"], name=f"score_{split}"),
        ]
    return Pipeline([
        *nodes,
        node(summarise_evaluation, ["test_metrics", "dev_metrics", "ner_model"],
             "evaluation_summary", name="summarise_evaluation"),
        node(plot_learning_curve, "training_history", "learning_curve_plot",
             name="plot_learning_curve"),
        node(plot_per_type_f1, "test_per_type", "per_type_f1_plot", name="plot_per_type_f1"),
    ])
