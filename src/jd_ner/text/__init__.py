"""Raw text formats and vocabularies."""
