"""yolofreeze: readable pure-PyTorch YOLOv8 / YOLOv10 for studying layer freezing in transfer learning."""
from .convert import load_model, save_checkpoint
from .model import YOLO, block_table, build_model

__all__ = ["YOLO", "block_table", "build_model", "load_model", "save_checkpoint"]
__version__ = "0.1.0"
