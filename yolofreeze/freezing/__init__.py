"""Everything about frozen layers, readable without the trainer: :mod:`.plan` (``FreezePlan``: what trains, the
batch-norm policy, phases, learning-rate multipliers, the audit and digests), :mod:`.phases` (the run's record of
its phases: ``freeze_audit.json`` with the integrity proof, ``memory.json``), :mod:`.cache` (frozen-prefix
outputs computed once), :mod:`.gradnorm` (per-step gradient norms), :mod:`.memory` (what one training step holds).
The trainer calls into this package; nothing here imports :mod:`yolofreeze.training`."""
