"""The `make demo` job: classify real sample images with the bundled weights."""

from __future__ import annotations

from pathlib import Path

from resnets.evaluate import BUNDLED_DIR, DEFAULT_PREDICT_MODELS, predict

SAMPLES = Path(__file__).resolve().parents[1] / "examples" / "images"


def main() -> None:
    shipped = [m for m in DEFAULT_PREDICT_MODELS
               if (BUNDLED_DIR / f"{m}_cifar10.safetensors").exists()]
    if not shipped:
        print("no bundled classification weights in this checkout yet; see README")
        return
    preds, errors = predict(SAMPLES, top_k=2)
    correct = 0
    print(f"{shipped[0]} (bundled CIFAR-10 weights) on {len(preds)} sample images:")
    for p in preds:
        truth = Path(p.path).name.split("_")[0]
        (best, prob), (second, prob2) = p.top
        correct += best == truth
        print(f"  {Path(p.path).name:24s} -> {best:10s} {prob:6.1%}   ({second} {prob2:.1%})")
    print(f"{correct}/{len(preds)} correct (the file name is the true class)")
    for e in errors:
        print(f"error: {e}")


if __name__ == "__main__":
    main()
