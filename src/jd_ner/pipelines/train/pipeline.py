from kedro.pipeline import Pipeline, node

from .nodes import build_model, resolve_training_config, train_model


def model_pipeline() -> Pipeline:
    """The resolved settings and the untrained model (also what the distill pipeline's
    teachers and student start from)."""
    return Pipeline([
        node(resolve_training_config, ["params:trick", "params:train"], "training_config",
             name="resolve_training_config"),
        node(build_model,
             ["training_config", "char_vocab", "bigram_vocab", "pinyin_vocab", "glyph_vocab",
              "entity_lexicon", "label_schema", "params:features", "params:pretrained_encoder",
              "char_encoder", "word_vocab"],
             "untrained_model", name="build_model"),
    ])


def create_pipeline(**kwargs) -> Pipeline:
    return model_pipeline() + Pipeline([
        node(train_model,
             ["untrained_model", "train_model_input", "dev_model_input", "entity_lexicon_folds",
              "dev_titles", "training_config", "params:decode", "training_checkpoints",
              "pseudo_titles"],
             ["ner_model", "training_history"], name="train_model"),
    ])
