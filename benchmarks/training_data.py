"""Training data path throughput: samples/s of the per-step sample (augmentation on the cached
[0, 1] display image, then the engine's letterbox at the train-time aspect and the box
targets), beside reading an already prepared validation image, and the memory the cache of
decoded images takes per image. Runs on real NIH images from ``../shared/data``.

    python benchmarks/training_data.py [--images 64] [--size 224] [--epochs 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--size", type=int, default=224, help="model input side")
    parser.add_argument("--epochs", type=int, default=3, help="samples drawn per image")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()

    import torch

    from training.data import create_dataset
    from training.train.data import LabeledImages, input_spec, limit
    from training.train.recipe import AugmentSection, InputSection

    torch.set_num_threads(args.threads)
    records = limit(list(create_dataset("nih", args.data / "nih", split="train")), args.images)
    spec = input_spec(args.size, 1, InputSection())
    keys = ("atelectasis", "cardiomegaly", "pleural_effusion", "nodule", "pneumonia")
    print(f"{len(records)} NIH images, model input {args.size}x{args.size}, "
          f"train_letterbox {spec.train_letterbox} p={spec.train_letterbox_p}")
    for name, train in (("train (augment + letterbox per sample)", True),
                        ("validation (prepared once)", False)):
        start = time.perf_counter()
        data = LabeledImages(records, keys, spec, AugmentSection() if train else None, seed=0,
                             train=train)
        load = time.perf_counter() - start
        start = time.perf_counter()
        for epoch in range(args.epochs):
            for index in range(len(data)):
                data.item(index, epoch)
        rate = args.epochs * len(data) / (time.perf_counter() - start)
        if train:
            held = sum(f.nbytes + (0 if s is None else s.nbytes) for f, s in data._displays)
        else:
            held = sum(p.pixels.nbytes + p.boxes.nbytes for p in data._prepared)
        print(f"{name:40s} load {load:6.2f} s  {rate:8.1f} samples/s  "
              f"cache {held / max(len(data), 1) / 1024:7.1f} KiB/image")


if __name__ == "__main__":
    main()
