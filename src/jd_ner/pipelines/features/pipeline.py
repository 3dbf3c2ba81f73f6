from kedro.pipeline import Pipeline, node

from .nodes import (
    build_bigram_vocabulary,
    build_char_vocabulary,
    build_label_schema,
    encode_split,
)


def create_pipeline(**kwargs) -> Pipeline:
    encode_inputs = ["char_vocab", "bigram_vocab", "label_schema", "params:features"]
    return Pipeline([
        node(build_char_vocabulary, ["train_titles", "params:pretrained_encoder", "params:features"],
             "char_vocab", name="build_char_vocabulary"),
        node(build_bigram_vocabulary, ["train_titles", "params:features"], "bigram_vocab",
             name="build_bigram_vocabulary"),
        node(build_label_schema, ["train_titles", "dev_titles"], "label_schema",
             name="build_label_schema"),
        node(encode_split, ["train_titles", *encode_inputs], "train_encoded", name="encode_train"),
        node(encode_split, ["dev_titles", *encode_inputs], "dev_encoded", name="encode_dev"),
    ])
