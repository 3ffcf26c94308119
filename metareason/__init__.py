"""metareason: LLM reasoning as meta-learning, measured in JAX.

Subpackages: `model` (the transformer, Hugging Face interop), `tokenize` (the lab vocabulary,
HF tokenizers with chat templates), `format` (the one Format: prompt, answer template,
extraction and verdict for lab and Hugging Face models), `tasks` (the synthetic reasoning lab), `sample` (batched
decoding), `runs` (run folders, checkpoints, and `load`: any run or Hugging Face folder as a typed
`LoadedModel`), `train` (SFT, GRPO, their one run loop), `evaluate` (rewards, Pass@k, mG-Pass@k), and
`data` (tensorflow-datasets builders, grain pipelines; import it explicitly). Everything imported here runs without tensorflow-datasets
or grain, on accelerator images that lack them.
"""

from metareason import evaluate, format, model, runs, sample, tasks, tokenize
from metareason.model import ModelConfig, apply, init, load_hf_checkpoint, save_hf_checkpoint
from metareason.runs import LoadedModel, load
from metareason.tokenize import HFTokenizer

__version__ = "0.1.0"
__all__ = ["evaluate", "format", "model", "runs", "sample", "tasks", "tokenize", "ModelConfig", "init", "apply",
           "load_hf_checkpoint", "save_hf_checkpoint", "HFTokenizer", "LoadedModel", "load", "__version__"]
