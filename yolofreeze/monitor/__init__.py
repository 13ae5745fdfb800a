"""Training monitors: what one training step holds in memory (:mod:`.memory`)."""
from .memory import MemoryBreakdown, SavedTensorCounter, format_memory, profile_training_step

__all__ = ["MemoryBreakdown", "SavedTensorCounter", "format_memory", "profile_training_step"]
