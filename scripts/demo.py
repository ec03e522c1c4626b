"""The `make demo` job: build a ResNet, run a forward pass, print what came out."""

import time

import torch

import resnets


def main() -> None:
    torch.manual_seed(0)
    for name in ("resnet20", "resnet50"):
        spec = resnets.get_spec(name)
        model = resnets.create_model(name).eval()
        x = torch.randn(2, *spec.input_size)
        start = time.perf_counter()
        with torch.inference_mode():
            logits = model(x)
        ms = (time.perf_counter() - start) * 1e3
        stats = resnets.model_stats(name)
        print(f"{name}: input {tuple(x.shape)} -> logits {tuple(logits.shape)} in {ms:.0f} ms; "
              f"{stats.params:,} parameters, {stats.gmacs:.3f} GMACs per image "
              "(random weights: bundled weights arrive with the training issue)")


if __name__ == "__main__":
    main()
