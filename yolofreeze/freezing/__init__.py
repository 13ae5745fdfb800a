"""Everything about frozen layers, readable without the trainer: :mod:`.plan` (``FreezePlan``: what trains, the
batch-norm policy, phases, learning-rate multipliers, the audit and digests), :mod:`.auto` (adaptive freezing: the
rule that decides from gradients when a prefix of blocks may freeze), :mod:`.audit` (the run's record of its
phases and decisions: ``freeze_audit.json`` with the integrity proof), :mod:`.cache` (frozen-prefix outputs computed
once), :mod:`.gradnorm` (per-step gradient norms), :mod:`.memory` (what one training step holds, per phase).
The trainer calls into this package; nothing here imports :mod:`yolofreeze.training`."""
