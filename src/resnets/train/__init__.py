"""Classification training: recipes, the loop, checkpoints, DDP."""

from .config import TrainConfig, fast_recipe, paper_recipe, recipe
from .loop import Trainer, train

__all__ = ["TrainConfig", "Trainer", "fast_recipe", "paper_recipe", "recipe", "train"]
