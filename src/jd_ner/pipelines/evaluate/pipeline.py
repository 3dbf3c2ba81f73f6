from kedro.pipeline import Pipeline, node

from .nodes import (
    confusion_counts,
    pair_entities,
    plot_confusion_matrix,
    plot_error_classes,
    plot_model_learning_curve,
    plot_per_type,
    predict_titles,
    score_titles,
    summarise_evaluation,
    tabulate_errors,
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
            node(pair_entities, [f"{split}_predictions", f"{split}_titles", "params:decode"],
                 f"{split}_entity_pairs", name=f"pair_{split}_entities"),
        ]
    return Pipeline([
        *nodes,
        node(summarise_evaluation, ["test_metrics", "dev_metrics", "ner_model"],
             "evaluation_summary", name="summarise_evaluation"),
        node(plot_model_learning_curve, ["ner_model", "training_history", "training_config"],
             "learning_curve_plot", name="plot_learning_curve"),
        node(plot_per_type, ["test_per_type", "test_metrics", "params:evaluate.per_type_top_n"],
             "per_type_f1_plot", name="plot_per_type"),
        node(plot_error_classes, ["dev_metrics", "test_metrics"], "error_classes_plot",
             name="plot_error_classes"),
        node(tabulate_errors, ["dev_entity_pairs", "dev_titles", "test_entity_pairs",
                               "test_titles"], "evaluation_errors", name="tabulate_errors"),
        node(confusion_counts, ["test_entity_pairs", "test_per_type",
                                "params:evaluate.confusion_top_n"],
             "test_type_confusion", name="count_test_type_confusion"),
        node(plot_confusion_matrix, "test_type_confusion", "confusion_matrix_plot",
             name="plot_confusion_matrix"),
    ])
