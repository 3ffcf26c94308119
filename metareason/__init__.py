"""metareason: LLM reasoning as meta-learning, measured in JAX.

Subpackages: `model` (the transformer, Hugging Face interop), `tokenize` (the lab vocabulary,
HF tokenizers with chat templates), `tasks` (the synthetic reasoning lab), `sample` (batched
decoding), `train` (SFT, GRPO, checkpoints), `evaluate` (rewards, Pass@k, mG-Pass@k), and `data` (tensorflow-datasets builders, grain
pipelines; import it explicitly). Everything imported here runs without tensorflow-datasets
or grain, on accelerator images that lack them.
"""

from metareason import evaluate, model, sample, tasks, tokenize
from metareason.model import ModelConfig, apply, init, load_hf_checkpoint, save_hf_checkpoint
from metareason.tokenize import HFTokenizer

__version__ = "0.1.0"
__all__ = ["evaluate", "model", "sample", "tasks", "tokenize", "ModelConfig", "init", "apply", "load_hf_checkpoint",
           "save_hf_checkpoint", "HFTokenizer", "__version__"]
