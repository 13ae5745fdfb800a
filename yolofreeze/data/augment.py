"""Optional training augmentations (off unless asked for): flip, HSV-style colour jitter, scale/translate.

Built on ``torchvision.transforms.v2`` so boxes (``tv_tensors.BoundingBoxes``) move with the pixels.
Randomness comes from torch's global generator, which the DataLoader seeds per worker from its own
generator, so a seeded loader gives the same augmentations run after run (for a given worker count).
"""
from __future__ import annotations

import torch
from torchvision import tv_tensors
from torchvision.transforms import v2


class Augment:
    """Random augmentation of one letterboxed image and its boxes.

    Args:
        hflip: probability of a horizontal flip.
        hue: hue shift, fraction of the colour circle (``|shift| <= hue``).
        saturation, value: saturation / brightness factors drawn from ``[1 - x, 1 + x]``.
        scale: zoom factor drawn from ``[1 - scale, 1 + scale]`` about the image centre.
        translate: shift, fraction of the image size, per axis.
        fill: value of uncovered pixels (the letterbox grey).

    Boxes that end up smaller than 2 px on a side are removed together with their class.
    """

    def __init__(self, hflip: float = 0.5, hue: float = 0.015, saturation: float = 0.7, value: float = 0.4,
                 scale: float = 0.5, translate: float = 0.1, fill: int = 114) -> None:
        steps: list[v2.Transform] = []
        if hflip > 0:
            steps.append(v2.RandomHorizontalFlip(hflip))
        if hue > 0 or saturation > 0 or value > 0:
            steps.append(v2.ColorJitter(brightness=value, saturation=saturation, hue=hue))
        if scale > 0 or translate > 0:
            steps.append(v2.RandomAffine(degrees=0.0, translate=(translate, translate),
                                         scale=(1.0 - scale, 1.0 + scale), fill=fill))
        steps += [v2.ClampBoundingBoxes(), v2.SanitizeBoundingBoxes(min_size=2.0)]
        self.transform = v2.Compose(steps)

    def __call__(self, image: torch.Tensor, boxes: torch.Tensor,
                 classes: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Augment ``image (3, H, W) uint8``, ``boxes (N, 4)`` float xyxy pixels, ``classes (N,)`` int64.

        Returns the augmented image ``(3, H, W) uint8`` and the surviving ``boxes (M, 4)``, ``classes (M,)``.
        """
        height, width = image.shape[-2:]
        sample = {"image": tv_tensors.Image(image),
                  "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(height, width)),
                  "labels": classes}
        out = self.transform(sample)
        return out["image"].as_subclass(torch.Tensor), out["boxes"].as_subclass(torch.Tensor), out["labels"]
