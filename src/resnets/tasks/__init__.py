"""What people do with trained models: classify (evaluate, predict) and super-resolve
(evaluate on benchmarks, upscale photos)."""
