"""The distill pipeline."""

from jd_ner.pipelines import lazy_create_pipeline

__getattr__ = lazy_create_pipeline(__name__)
