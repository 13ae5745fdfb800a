"""Fine-tune a YOLOv8/YOLOv10 detector with layer freezing: ``python train.py --data insplad --freeze 9``.

The command lives in the package (:mod:`yolofreeze.train`, also ``python -m yolofreeze.train``); ``python train.py
--help`` lists its flags.
"""
from yolofreeze.train import main

if __name__ == "__main__":
    raise SystemExit(main())
