"""jd_ner: GlobalPointer NER for JD.com product titles (GAIIC 2022), as a Kedro project."""

__version__ = "0.1.0"
