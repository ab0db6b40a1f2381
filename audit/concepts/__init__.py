"""Concept banks: named SAE latents, and the concepts the audit tests.

The package is split by job:

========================  ==================================================================
``vocabulary``            vocabulary files and the built-in lists in ``concept_banks/``
``text``                  text embeddings of a vocabulary (prompt ensembles, precomputed rows)
``matching``              latents to words by text: decoder–text cosine, self-consistency
``images``, ``auc``       latents to words by images: responses, zero-shot labels, random latents
``grouping``              concepts that span latents, validated on held-out images
``thresholds``            the text threshold set against random directions
``naming``, ``build``     naming a whole SAE (``msae-audit concepts``)
``bank``, ``bankfile``    the bank in memory and its YAML file
``locations``             where banks and vocabularies are found
========================  ==================================================================
"""

from audit.concepts.bank import (
    ABSENCE_PREFIX,
    ABSENT,
    PRESENT,
    Concept,
    ConceptBank,
    ConceptGroup,
    ImageScores,
)
from audit.concepts.bankfile import (
    BANK_FORMAT,
    BANK_VERSION,
    bank_to_dict,
    load_bank,
    save_bank,
    word_file_path,
)
from audit.concepts.build import build_bank, read_probe_images, sae_description
from audit.concepts.images import ImageNamingSettings
from audit.concepts.locations import (
    BANKS_DIR,
    BUILTIN_DIR,
    available_banks,
    bank_path_for_name,
    resolve_bank,
    validate_bank_name,
    validate_file_name,
)
from audit.concepts.matching import (
    DEFAULT_ALTERNATIVES,
    DEFAULT_TOP_M,
    self_ranks,
    top_matches,
    typical_input_norm,
)
from audit.concepts.naming import NamingResult, name_latents
from audit.concepts.text import read_text_embeddings, vocabulary_embeddings
from audit.concepts.thresholds import (
    NULL_DIRECTIONS,
    NULL_QUANTILE,
    random_direction_threshold,
)
from audit.concepts.vocabulary import (
    DEFAULT_TEMPLATES,
    VOCAB_SUFFIX,
    Vocabulary,
    builtin_vocabularies,
    load_vocabulary,
    read_vocabulary_file,
    resolve_vocabulary,
    validate_templates,
)

__all__ = [
    "ABSENCE_PREFIX",
    "ABSENT",
    "BANKS_DIR",
    "BANK_FORMAT",
    "BANK_VERSION",
    "BUILTIN_DIR",
    "DEFAULT_ALTERNATIVES",
    "DEFAULT_TEMPLATES",
    "DEFAULT_TOP_M",
    "NULL_DIRECTIONS",
    "NULL_QUANTILE",
    "PRESENT",
    "VOCAB_SUFFIX",
    "Concept",
    "ConceptBank",
    "ConceptGroup",
    "ImageNamingSettings",
    "ImageScores",
    "NamingResult",
    "Vocabulary",
    "available_banks",
    "bank_path_for_name",
    "bank_to_dict",
    "build_bank",
    "builtin_vocabularies",
    "load_bank",
    "load_vocabulary",
    "name_latents",
    "random_direction_threshold",
    "read_probe_images",
    "read_text_embeddings",
    "read_vocabulary_file",
    "resolve_bank",
    "resolve_vocabulary",
    "sae_description",
    "save_bank",
    "self_ranks",
    "top_matches",
    "typical_input_norm",
    "validate_bank_name",
    "validate_file_name",
    "validate_templates",
    "vocabulary_embeddings",
    "word_file_path",
]
