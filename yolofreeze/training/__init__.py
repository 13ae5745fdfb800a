"""The training loop and what only training needs: :mod:`.trainer` (``Trainer``: epochs, steps, validation,
checkpoints, resume, DDP), :mod:`.loss` (assignment → box / cls / DFL; YOLOv10's dual loss), :mod:`.optim`
(``TrainConfig``, parameter groups, the pure learning-rate schedule, the optimiser step, EMA), :mod:`.runs` (run
folders, ``args.yaml``, ``results.csv``), :mod:`.setup` (``RunSettings``: the flags of a run → a ready trainer)."""
