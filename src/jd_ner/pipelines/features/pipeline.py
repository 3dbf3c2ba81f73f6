from kedro.pipeline import Pipeline, node

from .nodes import (
    build_bigram_vocabulary,
    build_char_vocabulary,
    build_entity_lexicon,
    build_entity_lexicon_folds,
    build_glyph_vocabulary,
    build_label_schema,
    build_model_input,
    build_pinyin_vocabulary,
    build_word_vocabulary,
    encode_split,
)


def create_pipeline(**kwargs) -> Pipeline:
    encode_inputs = ["char_vocab", "bigram_vocab", "label_schema", "params:features"]
    nodes = [
        node(build_char_vocabulary, ["train_titles", "params:pretrained_encoder", "params:features"],
             "char_vocab", name="build_char_vocabulary"),
        node(build_bigram_vocabulary, ["train_titles", "params:features"], "bigram_vocab",
             name="build_bigram_vocabulary"),
        node(build_label_schema, ["train_titles", "dev_titles", "test_titles"], "label_schema",
             name="build_label_schema"),
        node(build_pinyin_vocabulary, "train_titles", "pinyin_vocab",
             name="build_pinyin_vocabulary"),
        node(build_glyph_vocabulary, ["train_titles", "params:features"], "glyph_vocab",
             name="build_glyph_vocabulary"),
        node(build_word_vocabulary, ["train_titles", "params:features"], "word_vocab",
             name="build_word_vocabulary"),
        node(build_entity_lexicon, ["train_titles", "params:features"], "entity_lexicon",
             name="build_entity_lexicon"),
        node(build_entity_lexicon_folds, ["train_titles", "params:features"],
             "entity_lexicon_folds", name="build_entity_lexicon_folds"),
    ]
    for split in ("train", "dev"):  # test is read at evaluate, with the model's own vocabularies
        nodes += [
            node(encode_split, [f"{split}_titles", *encode_inputs], f"{split}_encoded",
                 name=f"encode_{split}"),
            node(build_model_input, [f"{split}_encoded", "pinyin_vocab", "glyph_vocab",
                                     "params:features"],
                 f"{split}_model_input", name=f"build_{split}_model_input"),
        ]
    return Pipeline(nodes)
