"""Why a detector decides what it does: class-activation maps (:mod:`.cam`). Uses the model, data and evaluation
wings; the command is :mod:`yolofreeze.cam`."""
