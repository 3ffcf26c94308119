"""metareason: LLM reasoning as meta-learning, measured in JAX.

Subpackages: `metareason.model` (the transformer and Hugging Face interop) and
`metareason.tokenize` (tokenizers and chat templates). The model-side imports never pull in
tensorflow-datasets or grain, so they run on accelerator images that lack them.
"""

from metareason import model, tokenize
from metareason.model import ModelConfig, apply, init, load_hf_checkpoint, save_hf_checkpoint
from metareason.tokenize import HFTokenizer

__version__ = "0.1.0"
__all__ = ["model", "tokenize", "ModelConfig", "init", "apply", "load_hf_checkpoint",
           "save_hf_checkpoint", "HFTokenizer", "__version__"]
