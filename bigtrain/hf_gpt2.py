"""Moved to `bigtrain.hf.gpt2` (one module per architecture under bigtrain/hf); this name stays importable."""

from bigtrain.hf.gpt2 import (  # noqa: F401
    CONV1D,
    WEIGHTS,
    check_exportable,
    hf_config,
    is_hf_dir,
    read_hf_config,
    read_hf_weights,
    to_hf_state_dict,
    write_hf_dir,
)
from bigtrain.hf.tokenizers import (  # noqa: F401
    byte_tokenizer_json,
    bytes_to_unicode,
    read_hf_tokenizer,
    write_tokenizer,
)
