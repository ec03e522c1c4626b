"""The `make demo` job: classify real sample images and upscale a photo with the bundled
weights, printing what came out."""

from __future__ import annotations

from pathlib import Path

from resnets.tasks.classify import collect_images, predict_with
from resnets.weights import load_classifier

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SAMPLES = EXAMPLES / "images"


def classify() -> None:
    try:
        clf = load_classifier()
    except ValueError as e:
        print(f"no bundled classification weights ({e}); see README")
        return
    preds, errors = predict_with(clf, collect_images([SAMPLES]), top_k=2)
    correct = 0
    print(f"{clf.name} (bundled CIFAR-10 weights) on {len(preds)} sample images:")
    for p in preds:
        truth = Path(p.path).name.split("_")[0]
        (best, prob), (second, prob2) = p.top
        correct += best == truth
        print(f"  {Path(p.path).name:24s} -> {best:10s} {prob:6.1%}   ({second} {prob2:.1%})")
    print(f"{correct}/{len(preds)} correct (the file name is the true class)")
    for e in errors:
        print(f"error: {e}")


def upscale_demo(scale: int = 2) -> None:
    """Shrink a photo the way the SR benchmarks do, upscale it back, compare with the
    original: the bundled network against bicubic (PSNR on Y, ``scale`` pixels shaved)."""
    from resnets.metrics.sr import sr_psnr_ssim
    from resnets.models.imresize import downscale, modcrop, upscale
    from resnets.tasks.sr_eval import read_image_uint8, super_resolve
    from resnets.tasks.upscale import Picture, save_png
    from resnets.weights.sr import bundled_sr_weights, get_sr_model

    if bundled_sr_weights() is None:
        print("no bundled super-resolution weights in this checkout yet; see README")
        return
    model, label = get_sr_model()
    hr = modcrop(read_image_uint8(EXAMPLES / "sr" / "butterfly.png"), scale)
    lr = downscale(hr, scale)
    sr = super_resolve(model, lr, scale)
    bicubic = upscale(lr, scale)
    out = Path("runs/demo")
    out.mkdir(parents=True, exist_ok=True)
    save_png(Picture(sr.float() / 255, None, 8), out / f"butterfly_x{scale}.png")
    p_sr, s_sr = sr_psnr_ssim(sr, hr, scale)
    p_bi, s_bi = sr_psnr_ssim(bicubic, hr, scale)
    print(f"{label}: butterfly {tuple(lr.shape[-2:])} -> {tuple(sr.shape[-2:])} (x{scale}): "
          f"PSNR {p_sr:.2f} dB / SSIM {s_sr:.4f} vs bicubic {p_bi:.2f} dB / {s_bi:.4f} "
          f"({p_sr - p_bi:+.2f} dB); wrote {out / f'butterfly_x{scale}.png'}")


def main() -> None:
    classify()
    upscale_demo()


if __name__ == "__main__":
    main()
