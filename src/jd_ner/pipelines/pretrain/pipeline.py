from kedro.pipeline import Pipeline, node

from jd_ner.pipelines.train.nodes import resolve_training_config

from .nodes import char_encoder_for_training, collect_unlabelled_titles, pretrain_char_encoder

PRETRAIN_INPUTS = ["unlabelled_titles", "train_titles", "training_config", "params:pretrain",
                   "params:features", "training_checkpoints", "saved_char_encoders"]


def unlabelled_pipeline() -> Pipeline:
    """The unlabelled titles (also what the pseudo_label pipeline labels)."""
    return Pipeline([
        node(collect_unlabelled_titles, ["raw_unlabelled", "train_titles", "dev_titles", "test_titles"],
             ["unlabelled_titles", "unlabelled_report"], name="collect_unlabelled_titles"),
    ])


def training_encoder_pipeline() -> Pipeline:
    """The train pipeline's pretraining step: the encoder a run starts from (reused when
    one pretrained on the same titles with the same settings exists), none from scratch."""
    return unlabelled_pipeline() + Pipeline([
        node(char_encoder_for_training, [*PRETRAIN_INPUTS, "params:pretrained_encoder"],
             ["char_encoder", "pretrain_history"],
             name="char_encoder_for_training"),
    ])


def create_pipeline(**kwargs) -> Pipeline:
    return unlabelled_pipeline() + Pipeline([
        # the same node as in the train pipeline: `trick` shapes the encoder to pretrain
        node(resolve_training_config, ["params:trick", "params:train"], "training_config",
             name="resolve_training_config"),
        node(pretrain_char_encoder, PRETRAIN_INPUTS, ["char_encoder", "pretrain_history"],
             name="pretrain_char_encoder"),
    ])
