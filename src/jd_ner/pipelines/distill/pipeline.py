from kedro.pipeline import Pipeline, node

from ..train.pipeline import model_pipeline
from .nodes import assign_folds, teacher_targets, train_student, train_teachers

TRAINING = ["dev_model_input", "entity_lexicon_folds", "dev_titles", "training_config",
            "params:decode", "training_checkpoints"]


def create_pipeline(**kwargs) -> Pipeline:
    return model_pipeline() + Pipeline([
        node(assign_folds, ["train_titles", "params:distill"], "distill_folds",
             name="assign_distill_folds"),
        node(train_teachers, ["untrained_model", "train_model_input", *TRAINING, "distill_folds",
                              "train_titles", "params:evaluate"],
             ["distill_teachers", "distill_teachers_report"], name="train_teachers"),
        node(teacher_targets, ["distill_teachers", "train_titles", "unlabelled_titles",
                               "params:distill", "params:evaluate"],
             ["soft_targets", "soft_targets_report"], name="teacher_targets"),
        node(train_student, ["untrained_model", "train_model_input", *TRAINING, "soft_targets",
                             "distill_teachers"],
             ["ner_model", "training_history"], name="train_student"),
    ])
