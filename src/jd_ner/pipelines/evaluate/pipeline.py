from kedro.pipeline import Pipeline, node

from .nodes import plot_learning_curve, plot_per_type_f1, predict_dev, score_predictions


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(predict_dev, ["ner_model", "dev_encoded", "char_vocab", "label_schema",
                           "params:evaluate"], "dev_predictions", name="predict_dev"),
        node(score_predictions, ["dev_predictions", "dev_titles", "label_schema", "params:decode"],
             ["dev_metrics", "dev_per_type"], name="score_predictions"),
        node(plot_learning_curve, "training_history", "learning_curve_plot",
             name="plot_learning_curve"),
        node(plot_per_type_f1, "dev_per_type", "per_type_f1_plot", name="plot_per_type_f1"),
    ])
