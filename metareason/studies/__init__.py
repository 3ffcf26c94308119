"""Studies built on the library: each one a paper's experiment or a command, importing the
algorithms (`metareason.inner`), the model and the trainers from below; nothing below imports them.

- `sinusoid`: the MAML paper's sinusoid regression benchmark (Finn et al. 2017).
- `icl_regression`: in-context linear regression as one gradient-descent step (von Oswald et al. 2023).
- `prop21`: RaML Proposition 2.1 (attending to one more token as a weight change) made precise.
- `lab_tasks`, `lab_meta`, `lab_eval`: explicit meta-learning (MAML) of a lab model beside SFT on
  the same data: task encoding and losses, training, evaluation and the comparison table.
- `compare`: `metareason compare`, trajectory tokens beside true gradient steps on a model's data.
- `toy_loop`: the in-memory training loop the studies share.

Import the modules themselves (`from metareason.studies.sinusoid import train`); this package
imports none of them, so `import metareason.studies` stays light.
"""

__all__ = ["compare", "icl_regression", "lab_eval", "lab_meta", "lab_tasks", "prop21", "sinusoid", "toy_loop"]
