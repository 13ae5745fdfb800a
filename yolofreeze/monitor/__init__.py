"""What training does to gradients and memory: per-step gradient norms (:mod:`.gradnorm`) and what one training
step holds in memory (:mod:`.memory`)."""
from .gradnorm import GradNormMonitor, summarize_grad_norms
from .memory import MemoryBreakdown, SavedTensorCounter, format_memory, profile_training_step

__all__ = ["GradNormMonitor", "MemoryBreakdown", "SavedTensorCounter", "format_memory", "profile_training_step",
           "summarize_grad_norms"]
