#!/usr/bin/env bash
# Real-data check: Pyramid-Mamba and MambaAD on MVTec AD "bottle" (../shared/data/mvtec_ad), 256x256,
# with the offline ResNet18 conv1..layer3 weights (same widths as ResNet34; see ../shared/weights/SOURCES.md).
# Usage: benchmarks/train_bottle.sh [EPOCHS] [OUT]   (train.log has the time per epoch; RUN/test the metrics)
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${1:-10}"
out="${2:-runs/bottle}"
shared="$(cd .. && pwd)/shared"
for preset in pyramid_mamba mambaad; do
  /usr/bin/time -f "$preset: %e s wall" ssmad train --preset "$preset" --data "$shared/data/mvtec_ad" --classes bottle \
    --image-size 256 --encoder resnet18 --weights "$shared/weights/resnet18_partial_conv1-layer3_cudaresnet18.pth" \
    --epochs "$epochs" --batch-size 8 --device cpu --out "$out/$preset" --test
done
