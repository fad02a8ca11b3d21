"""Training and inference over datasets, for the four detector families.

* ``families.py``: what the loop needs of each family (build, loss, predict), ``get_family(name)``;
* ``config.py``: ``TrainConfig`` and its checks;
* ``train.py``: ``train``, the loop in named phases (setup, resume, step, evaluate, checkpoint);
* ``batches.py``: batches fixed by (seed, step), the augmented samples, collation;
* ``optim.py``: the learning-rate schedule and the weights' EMA;
* ``logs.py``: ``log.csv`` (a row per step) and ``metrics.json`` (an entry per evaluation);
* ``checkpoints.py``: atomic saves, ``load_checkpoint``, ``build_model_from_checkpoint``;
* ``processes.py``: one or several processes (DistributedDataParallel under torchrun);
* ``inference.py``: ``predict_dataset``, ``evaluate_model``, ``evaluate_checkpoint``.

Nothing is imported here: ``from detviz.engine.train import TrainConfig, train``.
"""
