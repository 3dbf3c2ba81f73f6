from kedro.pipeline import Pipeline, node

from .nodes import resolve_training_config, train_model


def create_pipeline(**kwargs) -> Pipeline:
    return Pipeline([
        node(resolve_training_config, ["params:trick", "params:train"], "training_config",
             name="resolve_training_config"),
        node(train_model,
             ["train_encoded", "dev_encoded", "dev_titles", "char_vocab", "bigram_vocab",
              "label_schema", "training_config", "params:features", "params:decode",
              "params:pretrained_encoder", "training_checkpoints"],
             ["ner_model", "training_history"], name="train_model"),
    ])
